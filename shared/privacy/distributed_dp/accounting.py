"""Rényi DP accounting for distributed discrete noise: Skellam (and distributed discrete Gaussian) releases.

A release is described by a DpEvent (the `dp_accounting` vocabulary fedrec's ledgers already use), in *integer
units* (after scaling by gamma and rounding), because the discrete bounds below are not scale-invariant:

* `SkellamDpEvent(l1_sensitivity, l2_sensitivity, variance)`: the released integer sum carries Skellam noise of
  `variance` per coordinate (sum over the shares of at least t survivors), and one client changes the sum by an
  integer vector of L1 norm <= Delta_1 and L2 norm <= Delta_2;
* `DistributedDiscreteGaussianDpEvent(l1_sensitivity, l2_sensitivity, local_sigma2, num_shares, dimension)`: the
  sum of `num_shares` independent N_Z(0, local_sigma2) shares.

Neither event is in `dp_accounting` (TFF's `DistributedSkellamSumQuery` emits `UnsupportedDpEvent`, with a TODO
for "exact privacy accounting for DDP"), so `DistributedDpRdpAccountant` subclasses dp_accounting's
`RdpAccountant`: it adds these two events to the ones it already composes (Gaussian, PoissonSampled Gaussian,
SelfComposed, Composed, ...) and reads epsilon with the *same* RDP -> (epsilon, delta) conversion
(`rdp_privacy_accountant.compute_epsilon`, Canonne-Kamath-Steinke 2020 / Asoodeh et al., as fedrec's RDP
accountant does).

Skellam RDP. Agarwal, Kairouz & Liu 2021 ("The Skellam Mechanism for Differentially Private Federated Learning",
NeurIPS 2021, arXiv:2110.04995), the RDP theorem for the multi-dimensional Skellam mechanism (Theorem 3.5 of the
arXiv version as we recall it; we could not read the paper text here to confirm the number): for integer
alpha > 1, with V the variance of each coordinate of the total Skellam noise,

    eps(alpha) = alpha Delta_2^2 / (2 V) + min( ((2 alpha - 1) Delta_2^2 + 6 Delta_1) / (4 V^2),  3 Delta_1 / (2 V) ).

The formula is written here exactly as the authors' reference implementation writes it (`_skellam_rdp` in
google-research/federated `distributed_dp/accounting_utils.py`, in variance form: the paper's Sk_{mu,mu} has
variance 2 mu, which turns alpha Delta_2^2/(4 mu) into alpha Delta_2^2/(2 V)), and the tests check it against
the exact Rényi divergence of shifted one-dimensional Skellams computed from scipy's PMF. The first term is the
Gaussian mechanism's RDP with sigma^2 = V; the second vanishes as the scale grows (V grows as gamma^2, Delta_1 as
gamma), which is why the Skellam matches the Gaussian at high precision.

Non-integer orders: we apply the theorem (and the DDG bound below) at integer orders only (the reference code
also casts orders to int) and extend it to fractional alpha soundly: g(alpha) = (alpha - 1) D_alpha(P||Q) =
log E_Q[(dP/dQ)^alpha] is a cumulant generating function, hence convex in alpha, with g(1) = 0. So for
k <= alpha <= k + 1 (k >= 2 an integer) g(alpha) lies below the chord through (k, (k-1) eps(k)) and
(k+1, k eps(k+1)), and for 1 < alpha < 2 below the chord from (1, 0): D_alpha <= eps(2). This lets Skellam events
compose with Gaussian ones over fedrec's usual order list (which starts at 1.01); the price is that orders below 2
are worth no more than order 2, which loosens epsilon when it is large (tens or more; see docs/distributed-dp.md).

Distributed discrete Gaussian RDP. Kairouz, Liu & Steinke 2021 ("The Distributed Discrete Gaussian Mechanism for
Federated Learning with Secure Aggregation", ICML 2021, arXiv:2102.06387), Theorem 1 and Proposition 14 / Eq. 17,
as in `compute_rdp_dgaussian` / `ddgauss_epsilon` of the same google-research file: with n shares of
N_Z(0, sigma^2), tau = 10 sum_{k=1}^{n-1} exp(-2 pi^2 sigma^2 k / (k+1)), a2 = Delta_2 / (sqrt(n) sigma),
a1 = Delta_1 / (sqrt(n) sigma):

    eps(alpha) = min( alpha a2^2 / 2 + tau d,  alpha/2 (a2^2 + 2 a1 tau + tau^2 d),  alpha/2 (a2 + sqrt(d) tau)^2 ).

Neighbouring relation. Both bounds are for two sums that differ by one client's integer vector while the noise
(at least t shares) stays the same: one client's data replaced by a zero update, the client still adding its
noise share. That is dp_accounting's REPLACE_SPECIAL ("zero-out") relation, and the only one this accountant
accepts for these events. Under add/remove-one the total noise variance itself would change with the number of
participants, which these bounds do not cover (in SecAgg the server knows who took part anyway). Sensitivities are
per client: under replace-one they would double.

No amplification by sampling is applied to these events (a PoissonSampledDpEvent around them is refused): the
server chooses the clients and so knows who was sampled; amplification would only hold against observers of the
released model, and dp_accounting's subsampled RDP is for the Gaussian only.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attr
import dp_accounting
import numpy as np
from dp_accounting import dp_event
from dp_accounting.rdp import rdp_privacy_accountant

NeighborRel = dp_accounting.NeighboringRelation

#: Same order list as fedrec's RDP accountant (dp-accounting's default plus 1.01-1.09 and more orders above 63).
DEFAULT_ORDERS: tuple[float, ...] = tuple(
    [1 + x / 100 for x in range(1, 10)]
    + [1 + x / 10 for x in range(1, 100)]
    + list(range(11, 64))
    + [64, 80, 96, 112, 128, 160, 192, 256, 384, 512, 768, 1024]
)


def _positive(name: str) -> Any:
    def check(instance: Any, attribute: Any, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (
                math.isfinite(value) and value > 0):
            raise ValueError(f"{type(instance).__name__}.{name} must be a finite number > 0, found {value!r}")
    return check


def _positive_int(name: str) -> Any:
    def check(instance: Any, attribute: Any, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{type(instance).__name__}.{name} must be an integer >= 1, found {value!r}")
    return check


@attr.define(frozen=True)
class SkellamDpEvent(dp_event.DpEvent):
    """One release of an integer sum with Skellam noise of `variance` per coordinate (integer units).

    `l1_sensitivity` / `l2_sensitivity`: the most one client can change the integer sum in L1 / L2 (Delta_1,
    Delta_2 of the conditionally rounded vector); `variance`: of the total noise on each coordinate that the
    guarantee may rely on (t * per-client variance for a SecAgg threshold t).
    """

    l1_sensitivity: float = attr.field(validator=_positive("l1_sensitivity"))
    l2_sensitivity: float = attr.field(validator=_positive("l2_sensitivity"))
    variance: float = attr.field(validator=_positive("variance"))


@attr.define(frozen=True)
class DistributedDiscreteGaussianDpEvent(dp_event.DpEvent):
    """One release of an integer sum of `num_shares` independent N_Z(0, local_sigma2) noise shares per coordinate.

    `dimension`: the number of coordinates released (the padded dimension); the tau term of the bound grows with it.
    """

    l1_sensitivity: float = attr.field(validator=_positive("l1_sensitivity"))
    l2_sensitivity: float = attr.field(validator=_positive("l2_sensitivity"))
    local_sigma2: float = attr.field(validator=_positive("local_sigma2"))
    num_shares: int = attr.field(validator=_positive_int("num_shares"))
    dimension: int = attr.field(validator=_positive_int("dimension"))


def _orders(orders: Sequence[float] | np.ndarray | float) -> np.ndarray:
    a = np.atleast_1d(np.asarray(orders, dtype=np.float64))
    if a.size == 0 or not np.all(np.isfinite(a)) or np.any(a <= 1):
        raise ValueError(f"RDP orders must be finite numbers > 1, found {np.asarray(orders).tolist()!r}")
    return a


def _at_orders(a: np.ndarray, at_integers: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """A bound known at integer orders >= 2, extended to real orders > 1 by convexity (module docstring)."""
    k = np.maximum(np.floor(a), 2.0)
    lo, hi = at_integers(k), at_integers(k + 1.0)
    chord = ((k + 1.0 - a) * (k - 1.0) * lo + (a - k) * k * hi) / (a - 1.0)
    return np.where(a < 2.0, at_integers(np.full_like(a, 2.0)), np.where(a == k, lo, chord))


def skellam_rdp(orders: Sequence[float] | np.ndarray | float, *, l1_sensitivity: float, l2_sensitivity: float,
                variance: float) -> np.ndarray:
    """RDP eps(alpha) of the multi-dimensional Skellam mechanism at each order (see the module docstring).

    All arguments in integer units. Integer orders get the theorem's value; fractional ones its convex extension.
    """
    SkellamDpEvent(l1_sensitivity, l2_sensitivity, variance)  # validates
    d1, d2, v = float(l1_sensitivity), float(l2_sensitivity), float(variance)

    def at_integers(a: np.ndarray) -> np.ndarray:
        gaussian = a * d2**2 / (2.0 * v)
        extra = np.minimum(((2.0 * a - 1.0) * d2**2 + 6.0 * d1) / (4.0 * v**2), 3.0 * d1 / (2.0 * v))
        return gaussian + extra

    return _at_orders(_orders(orders), at_integers)


def ddg_tau(local_sigma2: float, num_shares: int) -> float:
    """tau = 10 sum_{k=1}^{n-1} exp(-2 pi^2 sigma^2 k/(k+1)) (Kairouz et al. 2021, Theorem 1)."""
    k = np.arange(1, int(num_shares), dtype=np.float64)
    return float(10.0 * np.sum(np.exp(-2.0 * math.pi**2 * float(local_sigma2) * k / (k + 1.0))))


def ddg_rdp(orders: Sequence[float] | np.ndarray | float, *, l1_sensitivity: float, l2_sensitivity: float,
            local_sigma2: float, num_shares: int, dimension: int) -> np.ndarray:
    """RDP of the sum of `num_shares` discrete Gaussian shares (Kairouz et al. 2021, Prop. 14 / Eq. 17)."""
    DistributedDiscreteGaussianDpEvent(l1_sensitivity, l2_sensitivity, local_sigma2, num_shares, dimension)
    tau = ddg_tau(local_sigma2, num_shares)
    sd = math.sqrt(num_shares * float(local_sigma2))
    a1, a2, d = float(l1_sensitivity) / sd, float(l2_sensitivity) / sd, float(dimension)

    def at_integers(a: np.ndarray) -> np.ndarray:
        term_1 = a / 2.0 * a2**2 + tau * d
        term_2 = a / 2.0 * (a2**2 + 2.0 * a1 * tau + tau**2 * d)
        term_3 = a / 2.0 * (a2 + math.sqrt(d) * tau) ** 2
        return np.minimum(np.minimum(term_1, term_2), term_3)

    return _at_orders(_orders(orders), at_integers)


def gaussian_rdp(orders: Sequence[float] | np.ndarray | float, noise_multiplier: float) -> np.ndarray:
    """alpha / (2 z^2): the RDP of the Gaussian mechanism with sensitivity 1 and std z, at the *given* orders."""
    a = np.atleast_1d(np.asarray(orders, dtype=np.float64))
    return a / (2.0 * float(noise_multiplier) ** 2)


class DistributedDpRdpAccountant(rdp_privacy_accountant.RdpAccountant):
    """dp_accounting's RDP accountant plus `SkellamDpEvent` and `DistributedDiscreteGaussianDpEvent`.

    Only the REPLACE_SPECIAL (zero-out) relation is accepted when such an event is composed (module docstring);
    every other event is handled by the parent class exactly as before, and `get_epsilon` is the parent's.
    """

    def __init__(self, orders: Sequence[float] | None = None,
                 neighboring_relation: NeighborRel = NeighborRel.REPLACE_SPECIAL) -> None:
        super().__init__(list(DEFAULT_ORDERS if orders is None else orders), neighboring_relation)

    def _maybe_compose(self, event: dp_event.DpEvent, count: int,
                       do_compose: bool) -> rdp_privacy_accountant.RdpAccountant.CompositionErrorDetails | None:
        if isinstance(event, SkellamDpEvent | DistributedDiscreteGaussianDpEvent):
            if self._neighboring_relation is not NeighborRel.REPLACE_SPECIAL:
                return self.CompositionErrorDetails(
                    invalid_event=event,
                    error_message=(f"{type(event).__name__} is analysed for the REPLACE_SPECIAL (zero-out) relation "
                                   f"only: one client's vector replaced by zeros while its noise share stays; found "
                                   f"{self._neighboring_relation}"))
            if do_compose:
                if isinstance(event, SkellamDpEvent):
                    rdp = skellam_rdp(self._orders, l1_sensitivity=event.l1_sensitivity,
                                      l2_sensitivity=event.l2_sensitivity, variance=event.variance)
                else:
                    rdp = ddg_rdp(self._orders, l1_sensitivity=event.l1_sensitivity,
                                  l2_sensitivity=event.l2_sensitivity, local_sigma2=event.local_sigma2,
                                  num_shares=event.num_shares, dimension=event.dimension)
                self._rdp += count * rdp
            return None
        return super()._maybe_compose(event, count, do_compose)


def epsilon(events: Iterable[dp_event.DpEvent], *, delta: float, orders: Sequence[float] | None = None,
            neighboring_relation: NeighborRel = NeighborRel.REPLACE_SPECIAL) -> float:
    """Epsilon at `delta` of the composition of `events` (Skellam, DDG and any event dp_accounting's RDP accountant
    supports), via RDP over `orders` and dp_accounting's RDP -> (epsilon, delta) conversion.

    Raises `dp_accounting.UnsupportedEventError` (naming the event and why) for an event it cannot compose.
    """
    if not (isinstance(delta, numbers.Real) and 0 < delta < 1):
        raise ValueError(f"delta must be in (0, 1), found {delta!r}")
    acc = DistributedDpRdpAccountant(orders, neighboring_relation)
    for event in events:
        acc.compose(event)
    return float(acc.get_epsilon(delta))


# ---------------------------------------------------------------------------------------------------------------
# JSON: the same shape as fedrec's ledger codec ({"dp_event": ClassName, field: value, ...}), for these two
# classes plus every dp_accounting event, decoded from an allow-list by name (never by importing a module name
# read from the file).

EVENT_KEY = "dp_event"
_FEDREC_EVENTS: dict[str, type[dp_event.DpEvent]] = {
    "SkellamDpEvent": SkellamDpEvent,
    "DistributedDiscreteGaussianDpEvent": DistributedDiscreteGaussianDpEvent,
}
_INT_FIELDS = {("DistributedDiscreteGaussianDpEvent", "num_shares"), ("DistributedDiscreteGaussianDpEvent",
                                                                      "dimension")}


def _allowed() -> dict[str, type[dp_event.DpEvent]]:
    out = dict(_FEDREC_EVENTS)
    for name in dir(dp_event):
        cls = getattr(dp_event, name)
        if (isinstance(cls, type) and issubclass(cls, dp_event.DpEvent) and cls is not dp_event.DpEvent
                and cls.__module__ == dp_event.__name__):
            out[name] = cls
    return out


_ALLOWED = _allowed()


def event_to_json(event: dp_event.DpEvent) -> dict[str, Any]:
    """{"dp_event": class name, each attrs field: value}; nested events recurse, sequences become lists.

    Floats are written as Python floats (JSON keeps their shortest round-tripping repr), so a round trip is exact.
    """
    name = type(event).__name__
    if _ALLOWED.get(name) is not type(event):
        raise ValueError(f"cannot serialise {type(event).__module__}.{name}: not a known DpEvent class")
    out: dict[str, Any] = {EVENT_KEY: name}
    for f in attr.fields(type(event)):
        out[f.name] = _value_to_json(getattr(event, f.name), f"{name}.{f.name}")
    return out


def _value_to_json(value: Any, where: str) -> Any:
    if isinstance(value, dp_event.DpEvent):
        return event_to_json(value)
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        v = float(value)
        if not math.isfinite(v):
            raise ValueError(f"{where}: cannot serialise non-finite {v}")
        return v
    if isinstance(value, Sequence):
        return [_value_to_json(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise ValueError(f"{where}: cannot serialise a value of type {type(value).__name__}: {value!r}")


def event_from_json(obj: Any, *, where: str = "event") -> dp_event.DpEvent:
    """The inverse of `event_to_json`; errors name the path of the offending member."""
    if not isinstance(obj, Mapping) or EVENT_KEY not in obj:
        raise ValueError(f"{where}: expected an object with a {EVENT_KEY!r} member, found {obj!r}")
    name = obj[EVENT_KEY]
    cls = _ALLOWED.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ValueError(f"{where}.{EVENT_KEY}: unknown event class {name!r}")
    fields = {f.name for f in attr.fields(cls)}
    extra = sorted(set(obj) - fields - {EVENT_KEY})
    missing = sorted(fields - set(obj))
    if extra or missing:
        raise ValueError(f"{where}: {name} expects fields {sorted(fields)}; unknown {extra}, missing {missing}")
    values = {}
    for k in fields:
        v = obj[k]
        if (name, k) in _INT_FIELDS and (isinstance(v, bool) or not isinstance(v, int)):
            raise ValueError(f"{where}.{k}: expected an integer, found {v!r}")
        values[k] = _value_from_json(v, f"{where}.{k}")
    try:
        return cls(**values)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: cannot build {name}: {e}") from None


def _value_from_json(value: Any, where: str) -> Any:
    if isinstance(value, Mapping):
        return event_from_json(value, where=where)
    if isinstance(value, list):
        return [_value_from_json(v, f"{where}[{i}]") for i, v in enumerate(value)]
    return value
