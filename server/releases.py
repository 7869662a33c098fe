"""The release phase (round 0): statistics every user's device contributes to once, before any adapter round.

Order and dependencies (`hybrid.releases`):

1. `popularity` over the whole catalog. Its noisy counts are the popularity prior, and they choose the public
   item lists of the later releases (the heads with the largest noisy counts): post-processing, no extra cost.
2. `cooccurrence` over the top `hybrid.gram_head` items: the server denoises the noisy Gram (spectral shrinkage)
   and fits EASE on it; the device scores its own head items with it.
3. `cross` between the users' public text codes and the top `hybrid.cross_items` items: a ridge map from a text
   code to items, the part that reaches less popular items.

Each release is one round of `server.round.run_round` over every user's device (full participation: adding or
removing a user changes the sum by at most the release's sensitivity, and nothing is sub-sampled, so the release
is one Gaussian event), through the run's collector (plain or secure) and a `StatisticRelease` (noise and a
ledger entry under user-level DP). Under user-level DP the noise multipliers come from the run's budget split
(`server.calibration`); without it the sums are exact (a non-private run).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from fedrec.server.calibration import release_noise
from fedrec.server.evaluation import evaluate
from fedrec.server.release import StatisticRelease
from fedrec.server.round import RoundOutcome, RoundTask, run_round
from fedrec.shared.config import RunConfig
from fedrec.shared.hybrid import postprocess as pp
from fedrec.shared.hybrid.scorer import CROSS_ITEMS, CROSS_WEIGHTS, GRAM_ITEMS, GRAM_WEIGHTS, POP_COUNTS
from fedrec.shared.hybrid.statistics import KINDS, NOISE_KEY, RECORD_NOISE_KEY, StatisticSpec
from fedrec.shared.privacy.report.inputs import ReleaseInputs
from fedrec.shared.protocol import State

if TYPE_CHECKING:
    from flwr.serverapp import Grid

    from fedrec.server.federation import Federation

#: a bound on a local noise vector's norm: sigma (sqrt(d) + TAIL) fails with probability below exp(-TAIL^2 / 2)
TAIL = 10.0


def release_kinds(cfg: RunConfig) -> list[str]:
    """The run's releases, in the order they happen (popularity first: the others are indexed by its counts)."""
    kinds = [k.strip() for k in cfg.hybrid.releases.split(",") if k.strip()]
    return [k for k in KINDS if k in kinds]


def spec_for(kind: str, cfg: RunConfig, released: State, catalog_size: int) -> StatisticSpec:
    """What the devices compute for `kind`, given what earlier releases made public."""
    h = cfg.hybrid
    if kind == "popularity":
        return StatisticSpec(kind=kind, k=h.popularity_k, catalog_size=catalog_size)
    if POP_COUNTS not in released:
        raise ValueError(f"hybrid.releases: '{kind}' is indexed by the popularity release, which must come first")
    counts = released[POP_COUNTS]
    if kind == "cooccurrence":
        private = cfg.user_dp.enabled or cfg.record_dp.enabled or cfg.secagg.enabled
        return StatisticSpec(kind=kind, k=h.gram_k, catalog_size=catalog_size,
                             items=pp.select_head(counts, h.gram_head), factored=not private)
    return StatisticSpec(kind=kind, k=h.cross_k, catalog_size=catalog_size,
                         items=pp.select_head(counts, h.cross_items), rank=h.cross_rank)


def finish(kind: str, noisy: State, spec: StatisticSpec, cfg: RunConfig, *, sigma: float,
           population: int) -> State:
    """The released tensors of one release, computed from its noisy sum (post-processing only)."""
    h = cfg.hybrid
    total = np.asarray(noisy[kind], dtype=np.float64)
    if kind == "popularity":
        counts = np.where(total > h.popularity_threshold * sigma, total, 0.0)
        return {POP_COUNTS: counts.astype(np.float32)}
    items = np.asarray(spec.items, dtype=np.float32)  # exact below 2^24 (StatisticSpec.arrays checks)
    if kind == "cooccurrence":
        gram = pp.spiked_shrink(pp.gram_from_upper(total, spec.width), sigma, h.gram_edge)
        return {GRAM_ITEMS: items, GRAM_WEIGHTS: pp.ease(gram, h.gram_lambda).astype(np.float32)}
    return {CROSS_ITEMS: items, CROSS_WEIGHTS: pp.cross_weights(total, population, h.cross_lambda).astype(np.float32)}


def run_releases(grid: Grid, fed: Federation, noise: dict[str, float]) -> list[tuple[RoundOutcome, State]]:
    """Run the release phase; returns each release's round outcome and released tensors, in order.

    `noise`: kind -> noise multiplier (0 without user-level DP). Each outcome is committed by the caller.
    """
    out: list[tuple[RoundOutcome, State]] = []
    released: State = dict(fed.released)
    for kind in release_kinds(fed.cfg):
        if any(k.startswith(f"{_prefix(kind)}.") for k in released):
            continue  # released before a resume: public, in the checkpoint
        if kind != "popularity" and POP_COUNTS not in released:
            fed.log.warning("release %s skipped: it is indexed by the popularity release, which released nothing",
                            kind)
            continue
        spec = spec_for(kind, fed.cfg, released, len(fed.catalog))
        z = noise.get(kind, 0.0) if fed.user_dp is not None else 0.0
        # record-level DP alone: each device adds its own noise (client.statistics), the server none; the bound
        # the server enforces (and SecAgg+ encodes) leaves room for that noise
        z_local = noise.get(kind, 0.0) if fed.cfg.record_dp.enabled and fed.user_dp is None else 0.0
        local_sigma = z_local * spec.record_sensitivity
        bound = spec.sensitivity + local_sigma * (math.sqrt(math.prod(spec.shape)) + TAIL)
        task = RoundTask(phase=f"release:{kind}", nodes=list(fed.users), template=spec.template(),
                         payload=spec.arrays(),
                         config={**spec.to_config(), NOISE_KEY: float(z), RECORD_NOISE_KEY: float(z_local)},
                         clip_norm=bound, outer=spec.factored,
                         release=StatisticRelease(kind, fed.user_dp, noise_multiplier=z, sensitivity=spec.sensitivity))
        outcome = run_round(grid, fed, 0, task)
        new: State = {}
        if outcome.update is not None and not outcome.row.get("updates") and z == 0:
            # no contribution and no central noise (every device declined or failed): exact zeros are no statistic
            outcome.update = None
            outcome.row["status"] = "failed: no contributions"
        if outcome.update is not None:
            contributors = max(1, outcome.row.get("updates", 0))
            # the sum's noise std (distributed DP: the survivors' shares, at least z S)
            sigma = outcome.row.get("ddp_noise_std") or math.sqrt((z * spec.sensitivity) ** 2
                                                                  + contributors * local_sigma**2)
            new = finish(kind, outcome.update, spec, fed.cfg, sigma=sigma, population=len(fed.users))
            released.update(new)
        outcome.update = None  # a release never moves the adapter
        outcome.row.update(_describe(kind, spec, z))
        if z_local:
            outcome.row.update(release_local_noise_multiplier=z_local,
                               release_record_sensitivity=spec.record_sensitivity)
        out.append((outcome, new))
    return out


DESCRIPTIONS = {
    "popularity": "the 0/1 indicator of each user's k most-played items over the catalog (the popularity prior)",
    "cooccurrence": "the upper triangle of x x^T, x each user's k most-played items among a head of h items (EASE)",
    "cross": "a x^T, a each user's unit text code, x their k most-played items among h items (text to items)",
}


def declared_releases(cfg: RunConfig, catalog_size: int) -> list[ReleaseInputs]:
    """What the run's report declares for each release, from the settings alone (the verifier checks the ledger's
    entries against it)."""
    noise, h = release_noise(cfg), cfg.hybrid
    widths = {"popularity": catalog_size, "cooccurrence": min(h.gram_head, catalog_size),
              "cross": min(h.cross_items, catalog_size)}
    out = []
    for kind in release_kinds(cfg):
        k = {"popularity": h.popularity_k, "cooccurrence": h.gram_k, "cross": h.cross_k}[kind]
        probe = StatisticSpec(kind=kind, k=k, catalog_size=catalog_size, rank=h.cross_rank,
                              items=None if kind == "popularity" else np.arange(widths[kind]))
        out.append(ReleaseInputs(name=kind, noise_multiplier=noise[kind], sensitivity=probe.sensitivity,
                                 description=f"{DESCRIPTIONS[kind]}; k = {k}, h = {widths[kind]}"))
    return out


def _prefix(kind: str) -> str:
    return {"popularity": POP_COUNTS, "cooccurrence": GRAM_WEIGHTS, "cross": CROSS_WEIGHTS}[kind].split(".")[0]


def _describe(kind: str, spec: StatisticSpec, z: float) -> dict[str, Any]:
    return {"release": kind, "release_length": int(math.prod(spec.shape)), "release_sensitivity": spec.sensitivity,
            "release_noise_multiplier": z, "release_items": spec.width, "release_k": spec.k}


def run_release_phase(grid: Grid, fed: Federation, emit: Callable[[str, dict[str, Any]], None]) -> None:
    """Round 0: every release of `hybrid.releases` (server.releases), each committed like a round, then one
    evaluation of the model the releases make (the text tower plus the released statistics)."""
    for outcome, new in run_releases(grid, fed, release_noise(fed.cfg)):
        t0 = time.perf_counter() - outcome.row["train_seconds"]
        fed.apply_release(outcome, new)
        fed.commit(outcome, 0, t0, release=True)
        emit("release", outcome.row)
    if fed.released:
        t0 = time.perf_counter()
        row: dict[str, Any] = {"round": 0, "phase": "evaluate", "status": "ok"}
        client_rows: list[dict[str, Any]] = []
        row.update(evaluate(grid, fed, 0, client_rows))
        fed.commit(RoundOutcome(None, row, client_rows), 0, t0, release=True)
        emit("release", row)
