"""The accountant contract: `epsilon(events, delta=...)` over a ledger's DpEvents, nothing else.

Every accountant is a thin adapter over a library (dp-accounting, Opacus). The public method validates and
normalises once, here; a subclass implements two hooks, `_unsupported_reason` (describing) and `_epsilon`
(composing), mirroring `dp_accounting.PrivacyAccountant`. The contract every subclass must honour, and that
`tests/privacy/test_privacy_accountants.py` checks for each one:

* an empty ledger gives epsilon 0;
* an event the accountant can't handle raises `UnsupportedMechanism` naming that event, never a wrong number;
* adding events never lowers epsilon;
* epsilon is an upper bound at the given delta (pessimistic where the method has a choice).

An accountant is stateless between calls: it recomposes the whole ledger every time. That is what makes "the
accountant was reset after a restart" impossible by construction; ledgers are short after `compress_events`.
"""

from __future__ import annotations

import abc
import json
import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from dp_accounting import dp_event
from dp_accounting.privacy_accountant import UnsupportedEventError

from fedrec.shared.io import package_version
from fedrec.shared.privacy.errors import UnsupportedMechanism
from fedrec.shared.privacy.events import ADJACENCY, compress_events

_MEMO: dict[tuple, float] = {}
_MEMO_SIZE = 4096


class Accountant(abc.ABC):
    """Computes epsilon at a delta for a sequence of DpEvents (composed in order)."""

    #: registry key, as written in reports ("rdp", "pld", "opacus-prv", ...)
    name: ClassVar[str]
    #: the mathematical method ("rdp", "pld", "prv"); two accountants are independent if method or library differ
    method: ClassVar[str]
    #: the distribution that implements it ("dp-accounting", "opacus"), for version reporting
    library: ClassVar[str]

    def __init__(self, *, adjacency: str = "add_or_remove_one") -> None:
        if adjacency not in ADJACENCY:
            raise ValueError(f"adjacency: expected one of {sorted(ADJACENCY)}, found {adjacency!r}")
        self._adjacency = adjacency

    @property
    def adjacency(self) -> str:
        return self._adjacency

    def settings(self) -> dict[str, Any]:
        """The parameters needed to recompute exactly this figure (orders, discretization); written to reports."""
        return {}

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any] | None = None, *,
                      adjacency: str = "add_or_remove_one") -> Accountant:
        """Rebuild an accountant from `settings()` as found in a report; unknown keys are an error."""
        return cls(adjacency=adjacency, **dict(settings or {}))

    def library_version(self) -> str:
        return package_version(self.library)

    def describe(self) -> str:
        """One line for people, for example "pld (dp-accounting 0.6.0)"."""
        return f"{self.name} ({self.library} {self.library_version()})"

    def independent_of(self, other: Accountant | type[Accountant]) -> bool:
        """True if the two share neither the method nor the implementation (RDP in Opacus vs PLD in dp-acc...)."""
        return self.method != other.method or self.library != other.library

    def supports(self, event: dp_event.DpEvent) -> bool:
        return self._unsupported_reason(event) is None

    def epsilon(self, events: Sequence[dp_event.DpEvent], *, delta: float) -> float:
        """Epsilon (an upper bound) of composing `events` in order, at `delta`; 0.0 for no events."""
        _check_delta(delta)
        events = list(events)
        for i, event in enumerate(events):
            reason = self._unsupported_reason(event)
            if reason is not None:
                raise UnsupportedMechanism(f"{self.name} accountant cannot account for events[{i}] "
                                           f"({type(event).__name__}): {reason}")
        compressed = compress_events(events)
        if not compressed:
            return 0.0
        # Memoised per process: the accountants are deterministic functions of (settings, events, delta), and a
        # simulation worker asks the same question for many devices (same settings, same number of rounds).
        try:
            key = (type(self), json.dumps(self.settings(), sort_keys=True, default=str), self.adjacency,
                   tuple(compressed), float(delta))
            hash(key)
        except TypeError:  # an event with an unhashable field: compute without the memo
            return float(self._epsilon(compressed, delta))
        if key not in _MEMO:
            if len(_MEMO) >= _MEMO_SIZE:
                _MEMO.pop(next(iter(_MEMO)))
            _MEMO[key] = float(self._epsilon(compressed, delta))
        return _MEMO[key]

    def cumulative_epsilons(self, batches: Sequence[Sequence[dp_event.DpEvent]], *, delta: float) -> list[float]:
        """Epsilon after batches[0], after batches[0] + batches[1], ... (the epsilon-over-rounds curve).

        The default recomposes each prefix; accountants that compose incrementally (RDP) override it.
        """
        out, seen = [], []
        for batch in batches:
            seen.extend(batch)
            out.append(self.epsilon(seen, delta=delta))
        return out

    @abc.abstractmethod
    def _unsupported_reason(self, event: dp_event.DpEvent) -> str | None:
        """None if `event` can be accounted for; otherwise what is wrong, naming the offending sub-event."""

    @abc.abstractmethod
    def _epsilon(self, events: list[dp_event.DpEvent], delta: float) -> float:
        """Epsilon of the non-empty, supported, compressed `events` at `delta`."""


def _check_delta(delta: float) -> None:
    if isinstance(delta, bool) or not isinstance(delta, numbers.Real) or not math.isfinite(delta) \
            or not 0 < delta < 1:
        raise ValueError(f"delta: expected a number in (0, 1), found {delta!r}")


class DpAccountingAccountant(Accountant):
    """An accountant backed by one of dp-accounting's `PrivacyAccountant`s; subclasses only say how to make it."""

    def _new(self) -> Any:
        raise NotImplementedError

    def _unsupported_reason(self, event: dp_event.DpEvent) -> str | None:
        acc = self._new()
        if acc.supports(event):
            return None
        try:
            acc.compose(event)
        except UnsupportedEventError as e:
            return str(e)
        return f"not supported by dp_accounting's {type(acc).__name__}"

    def _epsilon(self, events: list[dp_event.DpEvent], delta: float) -> float:
        acc = self._new()
        for event in events:
            acc.compose(event)
        return acc.get_epsilon(delta)
