"""Privacy accountants: one per file, each a thin adapter over a library, behind one contract (`base.py`).

`make_accountant("pld")` builds one by name; `Accountant.epsilon(events, delta=...)` is the only call most code
needs.
"""

from fedrec.shared.privacy.accountants.base import Accountant
from fedrec.shared.privacy.accountants.opacus import (
    OpacusPrvAccountant,
    OpacusRdpAccountant,
    history_from_events,
    opacus_epsilon,
)
from fedrec.shared.privacy.accountants.pld import PldAccountant
from fedrec.shared.privacy.accountants.rdp import RdpAccountant
from fedrec.shared.privacy.accountants.registry import ACCOUNTANTS, independent_accountants, make_accountant

__all__ = [
    "ACCOUNTANTS",
    "Accountant",
    "OpacusPrvAccountant",
    "OpacusRdpAccountant",
    "PldAccountant",
    "RdpAccountant",
    "history_from_events",
    "independent_accountants",
    "make_accountant",
    "opacus_epsilon",
]
