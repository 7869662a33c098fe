"""Accountant names -> classes. Reports store the name and `settings()`, and the verifier rebuilds from them.

Names are part of the report format: a name, once written to a report, must keep meaning the same method with
the same defaults (the rules of `fedrec.shared.privacy.ledger`). A new method or a changed default gets a new
name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fedrec.shared.privacy.accountants.base import Accountant
from fedrec.shared.privacy.accountants.opacus import OpacusPrvAccountant, OpacusRdpAccountant
from fedrec.shared.privacy.accountants.pld import PldAccountant
from fedrec.shared.privacy.accountants.rdp import DistributedRdpAccountant, RdpAccountant
from fedrec.shared.privacy.errors import UnknownAccountant

ACCOUNTANTS: Mapping[str, type[Accountant]] = {
    cls.name: cls for cls in (RdpAccountant, PldAccountant, OpacusRdpAccountant, OpacusPrvAccountant,
                               DistributedRdpAccountant)
}


def make_accountant(name: str, *, adjacency: str = "add_or_remove_one",
                    settings: Mapping[str, Any] | None = None) -> Accountant:
    """The accountant registered as `name`, configured with `settings` (a report's ``accountant_settings``)."""
    cls = ACCOUNTANTS.get(name)
    if cls is None:
        raise UnknownAccountant(f"accountant: expected one of {sorted(ACCOUNTANTS)}, found {name!r}")
    try:
        return cls.from_settings(settings, adjacency=adjacency)
    except TypeError as e:  # an unknown settings key
        raise ValueError(f"accountant {name!r} settings {dict(settings or {})!r}: {e}") from None


def independent_accountants(name: str) -> list[str]:
    """The dp-accounting accountants that share neither method nor library with `name` (for recomputation).

    dp-accounting's RDP and PLD are always candidates for an Opacus figure; for a dp-accounting figure the
    other method is.
    """
    if name not in ACCOUNTANTS:
        raise UnknownAccountant(f"accountant: expected one of {sorted(ACCOUNTANTS)}, found {name!r}")
    ref = ACCOUNTANTS[name]
    return [n for n, cls in ACCOUNTANTS.items()
            if cls.library == "dp-accounting" and (cls.method != ref.method or cls.library != ref.library)]
