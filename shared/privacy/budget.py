"""The privacy budget: refuse a release *before* it would take epsilon past `epsilon_max` at `delta`.

The check composes the whole ledger plus the candidate event, so it is exact for the accountant used and can't
drift. Use the report's primary accountant (default PLD, tight): a looser one (RDP) stops training early, and
a budget checked with a different accountant than the report's could be "within budget" and still be reported
above it.

Server (user-level): ``budget.check(ledger, dpfedavg_event(...))`` before aggregating a round; on
`PrivacyBudgetExceeded`, stop the run without releasing that round. Device (record-level): the same with
``dpsgd_event(..., steps=planned_steps)`` before local training; refuse to train if it raises.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from dp_accounting import dp_event

from fedrec.shared.privacy.accountants import Accountant, make_accountant
from fedrec.shared.privacy.errors import PrivacyBudgetExceeded
from fedrec.shared.privacy.ledger import PrivacyLedger


def epsilon_after(ledger: PrivacyLedger, next_event: dp_event.DpEvent | None, *, delta: float,
                  accountant: str | Accountant = "pld") -> float:
    """Epsilon of the ledger, with `next_event` composed after it if given."""
    acc = _accountant(accountant, ledger)
    events = ledger.events() + ([next_event] if next_event is not None else [])
    return acc.epsilon(events, delta=delta)


def would_exceed(ledger: PrivacyLedger, next_event: dp_event.DpEvent, *, epsilon_max: float, delta: float,
                 accountant: str | Accountant = "pld") -> bool:
    """True if releasing `next_event` after the ledger would make epsilon exceed `epsilon_max` at `delta`."""
    _check_epsilon_max(epsilon_max)
    return epsilon_after(ledger, next_event, delta=delta, accountant=accountant) > epsilon_max


def check_budget(ledger: PrivacyLedger, next_event: dp_event.DpEvent, *, epsilon_max: float, delta: float,
                 accountant: str | Accountant = "pld") -> float:
    """Epsilon after `next_event` if within budget; otherwise raise `PrivacyBudgetExceeded` (nothing recorded)."""
    _check_epsilon_max(epsilon_max)
    eps = epsilon_after(ledger, next_event, delta=delta, accountant=accountant)
    if eps > epsilon_max:
        name = accountant if isinstance(accountant, str) else accountant.name
        raise PrivacyBudgetExceeded(
            f"{ledger.guarantee} budget: the next release (after {_last(ledger)}) would "
            f"bring epsilon to {eps:.6g} > epsilon_max {epsilon_max:g} at delta {delta:g} ({name} accountant, "
            f"{len(ledger)} releases so far)",
            epsilon=eps, epsilon_max=epsilon_max, delta=delta)
    return eps


@dataclass(frozen=True, kw_only=True)
class PrivacyBudget:
    """A budget as configured for one guarantee: `epsilon_max` at `delta`, checked with `accountant`."""

    epsilon_max: float
    delta: float
    accountant: str = "pld"

    def __post_init__(self) -> None:
        _check_epsilon_max(self.epsilon_max)
        make_accountant(self.accountant)  # unknown names fail here, at configuration time
        if not 0 < self.delta < 1:
            raise ValueError(f"PrivacyBudget.delta: expected a number in (0, 1), found {self.delta!r}")

    def would_exceed(self, ledger: PrivacyLedger, next_event: dp_event.DpEvent) -> bool:
        return would_exceed(ledger, next_event, epsilon_max=self.epsilon_max, delta=self.delta,
                            accountant=self.accountant)

    def check(self, ledger: PrivacyLedger, next_event: dp_event.DpEvent) -> float:
        return check_budget(ledger, next_event, epsilon_max=self.epsilon_max, delta=self.delta,
                            accountant=self.accountant)


def _accountant(accountant: str | Accountant, ledger: PrivacyLedger) -> Accountant:
    if isinstance(accountant, Accountant):
        if accountant.adjacency != ledger.adjacency:
            raise ValueError(f"accountant adjacency {accountant.adjacency!r} differs from the ledger's "
                             f"{ledger.adjacency!r}")
        return accountant
    return make_accountant(accountant, adjacency=ledger.adjacency)


def _check_epsilon_max(epsilon_max: float) -> None:
    if isinstance(epsilon_max, bool) or not isinstance(epsilon_max, int | float) or math.isnan(epsilon_max) \
            or epsilon_max <= 0:
        raise ValueError(f"epsilon_max: expected a number > 0, found {epsilon_max!r}")


def _last(ledger: PrivacyLedger) -> str:
    """Where the ledger stands, for a message: "round 3", "round 2 of run 'spring'" or "no release yet"."""
    if not len(ledger):
        return "no release yet"
    last = ledger.entries[-1]
    return f"round {last.round}" + (f" of run {last.run!r}" if last.run else "")
