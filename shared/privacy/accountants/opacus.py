"""Opacus' own accountants (RDP and PRV) over a ledger, so a device report can state the figure Opacus computed.

Opacus keeps its history as ``[(noise_multiplier, sample_rate, steps), ...]`` and computes epsilon from it;
`history_from_events` turns a fedrec ledger into exactly that history, and `opacus_epsilon` gives Opacus'
number for it. They are registered as accountants ("opacus-rdp", "opacus-prv") so that a device report can
name Opacus PRV as its primary accountant and the verifier can recompute it with dp-accounting RDP and PLD,
which share neither code nor (for PRV vs RDP) method with it.

Opacus only knows Poisson-sampled Gaussian steps under add/remove-one adjacency, so anything else is
unsupported here. A bare Gaussian(z) (no sampling) is the q = 1 case. Importing Opacus imports torch, so it is
imported only when a figure is actually computed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dp_accounting import dp_event

from fedrec.shared.privacy.accountants.base import Accountant, _check_delta
from fedrec.shared.privacy.errors import UnsupportedMechanism
from fedrec.shared.privacy.events import gaussian_components

OpacusHistory = list[tuple[float, float, int]]  # [(noise_multiplier, sample_rate, steps), ...]


def history_from_events(events: Sequence[dp_event.DpEvent]) -> OpacusHistory:
    """The Opacus accountant history equivalent to `events`, merging consecutive identical (z, q) like Opacus."""
    history: OpacusHistory = []
    for event in events:
        for z, q, count in gaussian_components(event):
            q = 1.0 if q is None else q
            if history and history[-1][:2] == (z, q):
                history[-1] = (z, q, history[-1][2] + count)
            else:
                history.append((z, q, count))
    return history


def opacus_epsilon(history: Sequence[tuple[float, float, int]], *, delta: float, method: str = "prv",
                   eps_error: float = 0.01) -> float:
    """Epsilon that Opacus' RDPAccountant ("rdp") or PRVAccountant ("prv", its upper bound) gives for `history`.

    Same numbers as ``PrivacyEngine(accountant=method).get_epsilon(delta)`` after the same steps. `eps_error`
    is PRV's error tolerance (Opacus' default 0.01); PRV returns the upper end of its interval.
    """
    _check_delta(delta)
    if not history:
        return 0.0
    if method == "rdp":
        from opacus.accountants import RDPAccountant

        acc: Any = RDPAccountant()
    elif method == "prv":
        from opacus.accountants import PRVAccountant

        acc = PRVAccountant()
    else:
        raise ValueError(f"method: expected 'rdp' or 'prv', found {method!r}")
    acc.history = [(float(z), float(q), int(n)) for z, q, n in history]
    if method == "prv":
        return float(acc.get_epsilon(delta, eps_error=eps_error))
    return float(acc.get_epsilon(delta))


class _OpacusAccountant(Accountant):
    library = "opacus"

    def _unsupported_reason(self, event: dp_event.DpEvent) -> str | None:
        if self.adjacency != "add_or_remove_one":
            return f"Opacus accounts for add_or_remove_one adjacency only, found {self.adjacency!r}"
        try:
            components = gaussian_components(event)
        except UnsupportedMechanism as e:
            return str(e)
        if any(c.noise_multiplier <= 0 for c in components):
            return "a noise multiplier of 0 is non-private; Opacus cannot account for it"
        return None


class OpacusRdpAccountant(_OpacusAccountant):
    """Opacus' RDPAccountant with its default orders (1.1..10.9, 12..63)."""

    name = "opacus-rdp"
    method = "rdp"

    def _epsilon(self, events: list[dp_event.DpEvent], delta: float) -> float:
        return opacus_epsilon(history_from_events(events), delta=delta, method="rdp")


class OpacusPrvAccountant(_OpacusAccountant):
    """Opacus' PRVAccountant (Gopi, Lee, Wutschitz 2021); reports the upper end of its error interval."""

    name = "opacus-prv"
    method = "prv"

    def __init__(self, *, adjacency: str = "add_or_remove_one", eps_error: float = 0.01) -> None:
        super().__init__(adjacency=adjacency)
        if isinstance(eps_error, bool) or not isinstance(eps_error, int | float) or not 1e-4 <= eps_error <= 1:
            raise ValueError(f"eps_error: expected a number in [1e-4, 1], found {eps_error!r}")
        self._eps_error = float(eps_error)

    def settings(self) -> dict[str, Any]:
        return {"eps_error": self._eps_error}

    def _epsilon(self, events: list[dp_event.DpEvent], delta: float) -> float:
        return opacus_epsilon(history_from_events(events), delta=delta, method="prv", eps_error=self._eps_error)
