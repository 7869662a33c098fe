"""DpEvents: fedrec's mechanisms as `dp_accounting` events, and the versioned JSON codec that stores them.

Every release is accounted as one DpEvent built here (`dpsgd_event` for a device's DP-SGD steps,
`dpfedavg_event` for a server round). Ledgers (`fedrec.shared.privacy.ledger`) store them, accountants compose
them, and reports, the Opacus bridge and the verifier read their parameters through `gaussian_components`.

JSON codec (``event_codec`` 1 of a ledger file)
------------------------------------------------
An event is a JSON object whose ``"dp_event"`` member names a class of `dp_accounting.dp_event` and whose
other members are that class's attrs fields (the fields of `DpEvent.to_named_tuple()`); nested events are
objects, sequences are arrays, and non-finite floats are ``{"float": "inf" | "-inf" | "nan"}``. Example::

    {"dp_event": "SelfComposedDpEvent", "count": 120,
     "event": {"dp_event": "PoissonSampledDpEvent", "sampling_probability": 0.02,
               "event": {"dp_event": "GaussianDpEvent", "noise_multiplier": 1.1}}}

Only classes defined in `dp_accounting.dp_event` are decoded, by name from an allow-list, so a file never makes
the reader import a module. How the codec may change is part of the ledger's compatibility contract (the
docstring of `fedrec.shared.privacy.ledger`).

``event_codec`` 2 adds two classes of `fedrec.shared.privacy.distributed_dp.accounting` to the allow-list,
``SkellamDpEvent`` and ``DistributedDiscreteGaussianDpEvent`` (distributed DP under secure aggregation, in integer
units; `docs/distributed-dp.md`), with the same JSON shape. A ledger is written with the lowest codec that holds
its events (`codec_version`), so a ledger without them stays codec 1, readable by every earlier fedrec.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import attr
import dp_accounting
from dp_accounting import dp_event

from fedrec.shared.privacy.distributed_dp.accounting import DistributedDiscreteGaussianDpEvent, SkellamDpEvent
from fedrec.shared.privacy.errors import LedgerError, UnsupportedMechanism

EVENT_CODEC_VERSION = 2
#: fedrec's own DpEvent classes (codec 2): discrete noise summed under secure aggregation.
DISTRIBUTED_EVENTS: tuple[type[dp_event.DpEvent], ...] = (SkellamDpEvent, DistributedDiscreteGaussianDpEvent)

# The adjacency relation, spelled as in reports, and the dp_accounting relation accountants are built with.
ADJACENCY = {
    "add_or_remove_one": dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE,
    "replace_one": dp_accounting.NeighboringRelation.REPLACE_ONE,
    "replace_special": dp_accounting.NeighboringRelation.REPLACE_SPECIAL,
}

_EVENT_KEY = "dp_event"
_FLOAT_KEY = "float"
_NON_FINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


# ---------------------------------------------------------------------------------------------------------------
# Standard events


def dpsgd_event(*, noise_multiplier: float, sample_rate: float, steps: int) -> dp_event.DpEvent:
    """`steps` DP-SGD steps with Poisson sampling: SelfComposed(PoissonSampled(q, Gaussian(z)), steps).

    This is what Opacus runs with ``poisson_sampling=True``: each step samples every record independently with
    probability ``sample_rate`` (q = expected batch / records), clips per-example gradients to C and adds
    N(0, (z C)^2) noise to their sum, so ``noise_multiplier`` z is the noise std divided by the clip norm.
    Keyword-only so z, q and steps can't be swapped.
    """
    _check_noise(noise_multiplier)
    _check_rate(sample_rate, allow_none=False)
    _check_count(steps, "steps")
    inner = dp_event.PoissonSampledDpEvent(float(sample_rate), dp_event.GaussianDpEvent(float(noise_multiplier)))
    return dp_event.SelfComposedDpEvent(inner, int(steps))


def dpfedavg_event(*, noise_multiplier: float, sample_rate: float | None) -> dp_event.DpEvent:
    """One DP-FedAvg round (McMahan et al. 2018): each update clipped to S, N(0, (z S)^2) added to the sum.

    With ``sample_rate`` q, clients are Poisson-sampled (each user of a fixed population N independently with
    probability q, so expected C = qN) and amplification by sampling applies: PoissonSampled(q, Gaussian(z)).
    With ``sample_rate=None`` ("no amplification") the round is accounted as a plain Gaussian(z) release,
    which is what must be used whenever the sampling is not provably Poisson from a known population (for
    example availability-driven selection, or Flower's default uniform sampling without a logged population).
    """
    _check_noise(noise_multiplier)
    _check_rate(sample_rate, allow_none=True)
    gaussian = dp_event.GaussianDpEvent(float(noise_multiplier))
    if sample_rate is None:
        return gaussian
    return dp_event.PoissonSampledDpEvent(float(sample_rate), gaussian)


class GaussianComponent(NamedTuple):
    """One (sub-sampled) Gaussian mechanism repeated `count` times; `sample_rate` None means no sampling."""

    noise_multiplier: float
    sample_rate: float | None
    count: int


def gaussian_components(event: dp_event.DpEvent) -> list[GaussianComponent]:
    """Flatten an event built from Gaussian, PoissonSampled(Gaussian), SelfComposed, Composed and NoOp events.

    This is the shape every fedrec ledger has; reports, the Opacus bridge and the verifier read mechanism
    parameters through it rather than by poking at event attributes. Anything else raises
    `UnsupportedMechanism` naming the sub-event.
    """
    out: list[GaussianComponent] = []

    def walk(ev: dp_event.DpEvent, count: int) -> None:
        if isinstance(ev, dp_event.NoOpDpEvent):
            return
        if isinstance(ev, dp_event.SelfComposedDpEvent):
            walk(ev.event, count * ev.count)
        elif isinstance(ev, dp_event.ComposedDpEvent):
            for sub in ev.events:
                walk(sub, count)
        elif isinstance(ev, dp_event.GaussianDpEvent):
            out.append(GaussianComponent(ev.noise_multiplier, None, count))
        elif isinstance(ev, dp_event.PoissonSampledDpEvent) and isinstance(ev.event, dp_event.GaussianDpEvent):
            out.append(GaussianComponent(ev.event.noise_multiplier, ev.sampling_probability, count))
        else:
            raise UnsupportedMechanism(
                f"expected a Gaussian, PoissonSampled(Gaussian), SelfComposed, Composed or NoOp event, "
                f"found {ev!r}"
            )

    walk(event, 1)
    return out


def compress_events(events: Iterable[dp_event.DpEvent]) -> list[dp_event.DpEvent]:
    """The same privacy loss as composing `events` in order, as few SelfComposed events as possible.

    Composition is commutative for every accountant (RDP adds, PLD convolves), so identical base mechanisms are
    grouped and counted: 500 rounds of PoissonSampled(q, Gaussian(z)) become one SelfComposed(..., 500). That is
    exact, and it turns PLD's 500 convolutions into one fast self-composition (seconds instead of minutes).
    Groups keep first-seen order so the output is deterministic. NoOp events are dropped.
    """
    groups: list[list[Any]] = []  # [base event, count]

    def add(ev: dp_event.DpEvent, count: int) -> None:
        while isinstance(ev, dp_event.SelfComposedDpEvent):
            count *= ev.count
            ev = ev.event
        if isinstance(ev, dp_event.NoOpDpEvent) or count == 0:
            return
        if isinstance(ev, dp_event.ComposedDpEvent):
            for sub in ev.events:
                add(sub, count)
            return
        for group in groups:
            if group[0] == ev:
                group[1] += count
                return
        groups.append([ev, count])

    for event in events:
        add(event, 1)
    return [base if count == 1 else dp_event.SelfComposedDpEvent(base, count) for base, count in groups]


# ---------------------------------------------------------------------------------------------------------------
# Event JSON codec


def event_to_json(event: dp_event.DpEvent) -> dict[str, Any]:
    """Encode a DpEvent (via `to_named_tuple`) as the versioned JSON form described in the module docstring."""
    if not isinstance(event, dp_event.DpEvent):
        raise LedgerError(f"expected a dp_accounting DpEvent, found {type(event).__name__}: {event!r}")
    try:
        named = event.to_named_tuple()
    except ValueError as e:
        raise UnsupportedMechanism(f"{type(event).__name__} cannot be serialised: {e}") from None
    return _named_to_json(named)


def _named_to_json(named: Any) -> dict[str, Any]:
    if named.module_name not in _MODULES:
        raise UnsupportedMechanism(
            f"only events of {sorted(_MODULES)} can be written to a ledger, found "
            f"{named.module_name}.{named.class_name}"
        )
    out: dict[str, Any] = {_EVENT_KEY: named.class_name}
    for name in named._fields:
        if name not in ("module_name", "class_name"):
            out[name] = _value_to_json(getattr(named, name), f"{named.class_name}.{name}")
    return out


def _value_to_json(value: Any, where: str) -> Any:
    if isinstance(value, dp_event.DpEventNamedTuple):
        return _named_to_json(value)
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        v = float(value)
        if math.isfinite(v):
            return v
        return {_FLOAT_KEY: "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")}
    if isinstance(value, Sequence):
        return [_value_to_json(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise LedgerError(f"{where}: cannot serialise a value of type {type(value).__name__}: {value!r}")


def _event_classes() -> dict[str, type[dp_event.DpEvent]]:
    """The allow-list: every concrete DpEvent class defined in `dp_accounting.dp_event`, by name."""
    out = {}
    for name in dir(dp_event):
        cls = getattr(dp_event, name)
        if (isinstance(cls, type) and issubclass(cls, dp_event.DpEvent) and cls is not dp_event.DpEvent
                and cls.__module__ == dp_event.__name__):
            out[name] = cls
    for cls in DISTRIBUTED_EVENTS:
        out[cls.__name__] = cls
    return out


_EVENT_CLASSES = _event_classes()
_MODULES = {dp_event.__name__, SkellamDpEvent.__module__}


def is_distributed(event: dp_event.DpEvent) -> bool:
    """True if `event` (or a sub-event) is a distributed-DP event (Skellam / distributed discrete Gaussian)."""
    if isinstance(event, DISTRIBUTED_EVENTS):
        return True
    if isinstance(event, dp_event.SelfComposedDpEvent | dp_event.PoissonSampledDpEvent):
        return is_distributed(event.event)
    if isinstance(event, dp_event.ComposedDpEvent):
        return any(is_distributed(e) for e in event.events)
    return False


def codec_version(events: Iterable[dp_event.DpEvent]) -> int:
    """The lowest ``event_codec`` that holds `events`: 2 with a distributed-DP event, else 1."""
    return 2 if any(is_distributed(e) for e in events) else 1


def event_from_json(obj: Any, *, where: str = "event") -> dp_event.DpEvent:
    """Decode the JSON form back into the DpEvent; errors name the path of the offending member."""
    if not isinstance(obj, Mapping) or _EVENT_KEY not in obj:
        raise LedgerError(f"{where}: expected an object with a {_EVENT_KEY!r} member, found {obj!r}")
    name = obj[_EVENT_KEY]
    cls = _EVENT_CLASSES.get(name) if isinstance(name, str) else None
    if cls is None:
        raise LedgerError(f"{where}.{_EVENT_KEY}: expected one of {sorted(_EVENT_CLASSES)}, found {name!r}")
    fields = {f.name for f in attr.fields(cls)}
    unknown = sorted(set(obj) - fields - {_EVENT_KEY})
    if unknown:
        raise LedgerError(f"{where}: {name} has no field(s) {unknown}; expected only {sorted(fields)}")
    values = {k: _value_from_json(v, f"{where}.{k}") for k, v in obj.items() if k != _EVENT_KEY}
    try:
        return cls(**values)
    except (TypeError, ValueError) as e:
        raise LedgerError(f"{where}: cannot build {name} from {dict(values)!r}: {e}") from None


def _value_from_json(value: Any, where: str) -> Any:
    if isinstance(value, Mapping):
        if _EVENT_KEY in value:
            return event_from_json(value, where=where)
        if set(value) == {_FLOAT_KEY} and value[_FLOAT_KEY] in _NON_FINITE:
            return _NON_FINITE[value[_FLOAT_KEY]]
        raise LedgerError(f"{where}: expected a number, string, array or event, found {dict(value)!r}")
    if isinstance(value, list):
        return [_value_from_json(v, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def canonical_event(event: dp_event.DpEvent) -> dp_event.DpEvent:
    """`event` as it reads back from JSON (tuples become lists, numpy scalars Python numbers)."""
    return event_from_json(event_to_json(event))


def _check_noise(noise_multiplier: float) -> None:
    if isinstance(noise_multiplier, bool) or not isinstance(noise_multiplier, numbers.Real) \
            or not math.isfinite(noise_multiplier) or noise_multiplier < 0:
        raise LedgerError(f"noise_multiplier: expected a finite number >= 0, found {noise_multiplier!r}")


def _check_rate(sample_rate: float | None, *, allow_none: bool) -> None:
    if sample_rate is None and allow_none:
        return
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, numbers.Real) or not 0 < sample_rate <= 1:
        raise LedgerError(f"sample_rate: expected a number in (0, 1], found {sample_rate!r}")


def _check_count(count: int, name: str) -> None:
    if isinstance(count, bool) or not isinstance(count, numbers.Integral) or count < 1:
        raise LedgerError(f"{name}: expected an integer >= 1, found {count!r}")
