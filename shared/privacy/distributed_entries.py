"""Distributed-DP releases in a user-level ledger: what an entry records, and how a reader checks it.

Under `user_dp.noise = distributed` the server adds no noise: each client adds its share of Skellam (or discrete
Gaussian) noise before masking (`fedrec.shared.privacy.distributed_dp`), and one release is one
`SkellamDpEvent` in integer units. The entry's metadata carries the round's public parameters in full
(``distributed_dp``: `DistributedDpParams.to_json()`: ring bits, scale gamma, conditional-rounding beta, the
per-client variance mu, the t survivors counted, the n clients the wrap-around bound assumes, the rotation seed),
so anyone can rebuild the event from them and check that the ledger accounts for exactly the encoding that was
used (`entry_components` does, for the report's consistency checks and `fedrec audit verify`).

Why the report's usual checks still apply: they read each entry as (noise multiplier, sample rate, count)
(`fedrec.shared.privacy.events.gaussian_components`). A distributed entry reads as its *central* noise
multiplier z = sqrt(t mu) / (gamma S) (what it was calibrated to carry, `DistributedDpParams.noise_multiplier`), no
sampling, count 1, but only after its event has been recomputed from its parameters and found equal. Epsilon is
never computed from that z: the accountant (`rdp-distributed`) reads the Skellam event itself.

`gaussian_surrogate` replaces each distributed event by the Gaussian with the same variance and L2 sensitivity
(z = sqrt(V) / Delta_2). The Skellam RDP bound is that Gaussian's plus a non-negative term, so epsilon of the
surrogate, computed by any accountant (dp-accounting's PLD included), is a lower reference the reported figure must
not fall below: the verifier's independent check for a ledger no other accountant can read.
"""

from __future__ import annotations

import math
from typing import Any

from dp_accounting import dp_event

from fedrec.shared.privacy.distributed_dp.params import DistributedDpParams
from fedrec.shared.privacy.errors import LedgerError
from fedrec.shared.privacy.events import (
    DISTRIBUTED_EVENTS,
    GaussianComponent,
    canonical_event,
    gaussian_components,
    is_distributed,
)
from fedrec.shared.privacy.ledger_entry import LedgerEntry

#: metadata key of a distributed entry's parameters
PARAMS_KEY = "distributed_dp"


def entry_metadata(params: DistributedDpParams, **extra: Any) -> dict[str, Any]:
    """A distributed release's ledger metadata: its central-equivalent z, no sampling, the full parameters."""
    return {"noise_multiplier": float(params.noise_multiplier), "sample_rate": None,
            "noise": f"distributed {params.mechanism} (client noise shares under secure aggregation)",
            "clip_norm": float(params.clip_norm), PARAMS_KEY: params.to_json(), **extra}


def entry_params(entry: LedgerEntry, *, where: str = "entry") -> DistributedDpParams:
    """The parameters a distributed entry records, checked against its event (LedgerError if they disagree)."""
    raw = entry.metadata.get(PARAMS_KEY)
    if raw is None:
        raise LedgerError(f"{where}: a {type(entry.event).__name__} without metadata.{PARAMS_KEY} (its parameters)")
    try:
        params = DistributedDpParams.from_json(raw)
        expected = canonical_event(params.dp_event())
    except ValueError as e:
        raise LedgerError(f"{where}.metadata.{PARAMS_KEY}: {e}") from None
    if expected != entry.event:
        raise LedgerError(f"{where}: the event {entry.event!r} is not the one its recorded parameters give "
                          f"({expected!r})")
    return params


def entry_components(entry: LedgerEntry, *, where: str = "entry") -> list[GaussianComponent]:
    """`gaussian_components` of an entry; a distributed one reads as (its central z, no sampling, 1) once its event
    has been recomputed from its parameters (module docstring). UnsupportedMechanism / LedgerError otherwise."""
    if isinstance(entry.event, DISTRIBUTED_EVENTS):
        return [GaussianComponent(entry_params(entry, where=where).noise_multiplier, None, 1)]
    return gaussian_components(entry.event)


def gaussian_surrogate(event: dp_event.DpEvent) -> dp_event.DpEvent:
    """`event` with each distributed event replaced by GaussianDpEvent(sqrt(V) / Delta_2) (a lower reference)."""
    if isinstance(event, DISTRIBUTED_EVENTS):
        variance = (event.variance if hasattr(event, "variance")
                    else event.local_sigma2 * event.num_shares)  # type: ignore[attr-defined]
        return dp_event.GaussianDpEvent(math.sqrt(variance) / event.l2_sensitivity)  # type: ignore[attr-defined]
    if isinstance(event, dp_event.SelfComposedDpEvent):
        return dp_event.SelfComposedDpEvent(gaussian_surrogate(event.event), event.count)
    if isinstance(event, dp_event.ComposedDpEvent):
        return dp_event.ComposedDpEvent([gaussian_surrogate(e) for e in event.events])
    if isinstance(event, dp_event.PoissonSampledDpEvent) and is_distributed(event.event):
        return dp_event.PoissonSampledDpEvent(event.sampling_probability, gaussian_surrogate(event.event))
    return event
