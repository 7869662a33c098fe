"""Rényi DP accounting with dp-accounting's `RdpAccountant` (Mironov 2017; Mironov, Talwar, Zhang 2019).

RDP gives a valid upper bound on epsilon at *every* order, and the conversion takes the best order in the
list, so the order list only decides how tight the bound is, never whether it is sound. The default list below
is dp-accounting's (1.1 to 10.9 in steps of 0.1, 11 to 63, 128 to 1024) plus:

* 1.01 to 1.09: the best order approaches 1 when epsilon is large (few rounds, little noise, or "no
  amplification" DP-FedAvg, where epsilon is often in the tens or hundreds); without them such bounds are
  needlessly loose;
* 64 to 112 and 160 to 768 in a few steps: fills the gaps above 63 used at very small delta or tiny sampling
  rates.

The conversion to (epsilon, delta) is Canonne-Kamath-Steinke 2020 / Asoodeh et al., as in dp-accounting (it
equals Opacus' Balle et al. 2020 formula).

For some fractional orders near 1 (e.g. 1.01 to 1.7 at q = 0.25, z = 1, the record-level defaults) dp-accounting's
series does not converge; it then logs a warning and sets that order's divergence to infinity, which drops the
order from the minimum and can only loosen epsilon, never understate it. `fedrec audit verify` printed dozens of
those lines per device report, so they are filtered (that message only, `_ExcludedOrderFilter`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from dp_accounting import dp_event
from dp_accounting.rdp import rdp_privacy_accountant

from fedrec.shared.privacy.accountants.base import DpAccountingAccountant, _check_delta
from fedrec.shared.privacy.events import ADJACENCY

DEFAULT_ORDERS: tuple[float, ...] = tuple(
    [1 + x / 100 for x in range(1, 10)]
    + [1 + x / 10 for x in range(1, 100)]
    + list(range(11, 64))
    + [64, 80, 96, 112, 128, 160, 192, 256, 384, 512, 768, 1024]
)


_CURVES: dict[tuple, list[float]] = {}


class _ExcludedOrderFilter(logging.Filter):
    """Drops dp-accounting's "failed to converge ... Excluding this order" warning (sound: the order is unused)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("_compute_log_a_frac failed to converge")


logging.getLogger("absl").addFilter(_ExcludedOrderFilter())


class RdpAccountant(DpAccountingAccountant):
    """RDP over `orders` (default `DEFAULT_ORDERS`). Fast, composes incrementally; loose at tiny sampling rates."""

    name = "rdp"
    method = "rdp"
    library = "dp-accounting"

    def __init__(self, *, adjacency: str = "add_or_remove_one", orders: Sequence[float] | None = None) -> None:
        super().__init__(adjacency=adjacency)
        orders = DEFAULT_ORDERS if orders is None else tuple(orders)
        if not orders or len(orders) > 2000 or not all(
                isinstance(a, int | float) and not isinstance(a, bool) and 1 < a <= 1e6 for a in orders):
            raise ValueError(f"orders: expected 1 to 2000 numbers in (1, 1e6], found {list(orders)[:10]!r}...")
        self._orders = tuple(float(a) for a in orders)

    def settings(self) -> dict[str, Any]:
        return {"orders": list(self._orders)}

    def _new(self) -> rdp_privacy_accountant.RdpAccountant:
        return rdp_privacy_accountant.RdpAccountant(list(self._orders), ADJACENCY[self.adjacency])

    def cumulative_epsilons(self, batches: Sequence[Sequence[dp_event.DpEvent]], *, delta: float) -> list[float]:
        """Incremental: RDP adds up, so one accountant composes batch after batch and is read after each."""
        _check_delta(delta)
        key = (self.adjacency, self._orders, tuple(tuple(b) for b in batches), float(delta))
        if key not in _CURVES:  # memoised: many devices of a simulation share one curve (same settings, rounds)
            if len(_CURVES) >= 1024:
                _CURVES.pop(next(iter(_CURVES)))
            _CURVES[key] = self._curve(batches, delta)
        return list(_CURVES[key])

    def _curve(self, batches: Sequence[Sequence[dp_event.DpEvent]], delta: float) -> list[float]:
        acc, out = self._new(), []
        for batch in batches:
            for event in batch:
                if not self.supports(event):
                    self.epsilon([event], delta=delta)  # raises UnsupportedMechanism with the reason
                acc.compose(event)
            out.append(float(acc.get_epsilon(delta)))
        return out


class DistributedRdpAccountant(RdpAccountant):
    """RDP as `RdpAccountant` plus the distributed-DP events (Skellam, distributed discrete Gaussian).

    A separate name because the figure depends on fedrec's own RDP bounds for those events
    (`fedrec.shared.privacy.distributed_dp.accounting`, Agarwal-Kairouz-Liu 2021 / Kairouz-Liu-Steinke 2021) on top
    of dp-accounting's composition and conversion; every other event is dp-accounting's exactly. Those events are
    analysed for the zero-out relation only (`replace_special`): the accountant refuses them under any other.
    """

    name = "rdp-distributed"
    method = "rdp"
    library = "fedrec"

    def _new(self) -> rdp_privacy_accountant.RdpAccountant:
        from fedrec.shared.privacy.distributed_dp.accounting import DistributedDpRdpAccountant

        return DistributedDpRdpAccountant(list(self._orders), ADJACENCY[self.adjacency])
