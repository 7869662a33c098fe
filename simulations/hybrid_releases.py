"""The release phase of `fedrec.server.releases`, computed in one process, and the hybrid scorer's parts as matrices.

Why not a federation per row: a benchmark row is a release phase (one statistic after another) and an evaluation
of every user; `bench_privacy_utility` needs dozens of them (every epsilon, seeds, the settings tuned on
validation). This module runs the *same* code paths on the whole population at once:

- each user's contribution is `StatisticSpec.indicator` of their history (clipping never binds: a 0/1 indicator
  of m <= k items has norm sqrt(m) <= the sensitivity, and its Gram triangle sqrt(m(m+1)/2)), so the sum of
  contributions is a matrix product over the users' indicators, exactly what the collectors add up;
- the noise is the server's (user-level: N(0, (z sensitivity)^2) on the sum and one `record_user_level_release`
  per release in a user-level ledger) or the devices' (record-level alone: each of the N devices adds
  N(0, (z record_sensitivity)^2), whose sum is N(0, N (z record_sensitivity)^2); contributions are one item per
  slot, `one_per_slot`);
- with `user_dp.noise = distributed` the noise is the devices' Skellam shares: each user's contribution goes through
  the devices' own encoding (`DistributedEncoding.encode`: rotation, rounding, its noise share; a seeded generator
  here, for reproducibility), the encodings are added in the ring (what SecAgg+ unmasks, bit-exactly), and the
  server's `decode_sum` reads the noisy sum; one Skellam event per release (`record_distributed_release`);
- `fedrec.server.releases.spec_for` and `finish` turn the noisy sums into the released tensors, and the noise
  multipliers come from `fedrec.server.calibration.resolve_noise`, as in a run.

`Parts` then gives `HybridScorer.components` for every evaluated user as matrices; `Parts.check` compares a few
rows with `HybridScorer.score` itself. `fedrec simulate --preset hybrid-eps8` is the federated run of a row.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedrec.server.calibration import release_noise, resolve_noise
from fedrec.server.distributed_release import ACCOUNTANT, calibration
from fedrec.server.releases import finish, release_kinds, spec_for
from fedrec.shared.config import RunConfig
from fedrec.shared.data.types import Catalog
from fedrec.shared.hybrid.scorer import (
    CROSS_ITEMS,
    CROSS_WEIGHTS,
    GRAM_ITEMS,
    GRAM_WEIGHTS,
    POP_COUNTS,
    HybridScorer,
    popularity_score,
)
from fedrec.shared.hybrid.statistics import StatisticSpec, one_per_slot
from fedrec.shared.hybrid.text import TextFeatures
from fedrec.shared.privacy.accountants import make_accountant
from fedrec.shared.privacy.calibrate import default_user_delta
from fedrec.shared.privacy.ledger import PrivacyLedger
from fedrec.shared.secagg.distributed_encoding import DistributedEncoding, round_parameters
from fedrec.shared.train.dp_sgd import record_epsilon
from fedrec.shared.train.examples import bucket_of
from fedrec.simulations.hybrid_eval import EvalData, maxnorm_rows


@dataclass
class Population:
    """Everything a release phase reads: the users' splits (via `data`), the catalog and its text features."""

    data: EvalData
    catalog: Catalog
    table: np.ndarray  # (M, d) the catalog table (MiniLM, L2-normalised rows): the floor's text tower
    text: TextFeatures  # the whitened table: the hybrid's text tower
    _slots: dict[int, list[tuple[np.ndarray, np.ndarray]]] = field(default_factory=dict)

    def histories(self, slots: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
        """(items, counts) per user; with `slots` > 0, one item per example slot (record-level releases)."""
        if not slots:
            return [(s.train_items, s.train_weights) for s in self.data.splits]
        if slots not in self._slots:
            self._slots[slots] = [
                one_per_slot(s.train_items, s.train_weights,
                             np.array([bucket_of(self.catalog.item_ids[int(i)], slots) for i in s.train_items]))
                for s in self.data.splits]
        return self._slots[slots]


def indicators(spec: StatisticSpec, histories: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """(users, width) float64: each user's `spec.indicator`."""
    return np.stack([spec.indicator(items, counts) for items, counts in histories])


def exact_sum(spec: StatisticSpec, pop: Population, histories: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """The sum of every user's contribution to `spec`, laid out as the release's template."""
    x = indicators(spec, histories)
    if spec.kind == "popularity":
        return x.sum(0)
    if spec.kind == "cooccurrence":
        gram = x.T @ x
        return gram[np.triu_indices(spec.width)]
    codes = np.stack([pop.text.code(items, spec.rank) for items, _ in histories])  # (users, r)
    return codes.T @ x  # (r, h): sum of code x^T


@dataclass
class ReleasePhase:
    """A release phase's outcome: the released tensors, its privacy and its cost."""

    released: dict[str, np.ndarray]
    epsilon: float | None  # user-level (PLD) or the per-device record-level figure; None without DP
    unit: str  # "user", "user (distributed)", "record slot" or "none"
    delta: float | None
    noise: dict[str, float]  # kind -> noise multiplier
    seconds: float


def run_phase(cfg: RunConfig, pop: Population, seed: int) -> ReleasePhase:
    """Every release of `cfg` (calibrated as a run would be) with noise from `seed`."""
    t0 = time.perf_counter()
    n, m = len(pop.data.splits), pop.data.num_items
    cfg = resolve_noise(cfg, n)
    noise = release_noise(cfg)
    user, record = cfg.user_dp.enabled, cfg.record_dp.enabled and not cfg.user_dp.enabled
    histories = pop.histories(cfg.train.examples_per_user if record else 0)
    rng = np.random.default_rng([seed, 7])
    delta = (cfg.user_dp.delta or default_user_delta(n)) if user else (cfg.record_dp.delta if record else None)
    distributed = user and cfg.user_dp.noise == "distributed"
    ledger = PrivacyLedger(guarantee="user-level" if user else "record-level", subject="bench",
                           adjacency="replace_special" if distributed else "add_or_remove_one")
    released: dict[str, np.ndarray] = {}
    for index, kind in enumerate(release_kinds(cfg)):
        spec = spec_for(kind, cfg, released, m)
        total = exact_sum(spec, pop, histories)
        z = noise.get(kind, 0.0)
        if distributed:
            noisy, sigma = _distributed_sum(spec, pop, histories, _round_params(cfg, spec, total.size, z, n, delta),
                                            rng, ledger, kind)
            noisy = noisy.reshape(total.shape)
            released.update(finish(kind, {kind: noisy}, spec, cfg, sigma=sigma, population=n))
            continue
        if user:
            sigma = z * spec.sensitivity
            ledger.record_user_level_release(round=0, noise_multiplier=z, sample_rate=None,
                                              clip_norm=spec.sensitivity, release=kind)
        elif record:
            sigma = z * spec.record_sensitivity * math.sqrt(n)  # the sum of the N devices' own noise
            ledger.record_local_release(round=0, noise_multiplier=z, sensitivity=spec.record_sensitivity,
                                        name=kind, run="bench", release=index)
        else:
            sigma = 0.0
        noisy = total + rng.normal(0.0, sigma, size=total.shape) if sigma > 0 else total
        released.update(finish(kind, {kind: noisy}, spec, cfg, sigma=sigma, population=n))
    epsilon = None
    if user:
        epsilon = make_accountant(ACCOUNTANT if distributed else "pld", adjacency=ledger.adjacency).epsilon(
            ledger.events(), delta=delta)
    elif record:
        epsilon = record_epsilon(ledger, cfg)
    unit = "user (distributed)" if distributed else "user" if user else "record slot" if record else "none"
    return ReleasePhase(released, epsilon, unit, delta,
                        noise, time.perf_counter() - t0)


def contributions(spec: StatisticSpec, pop: Population, histories: list[tuple[np.ndarray, np.ndarray]]
                  ) -> Iterator[np.ndarray]:
    """Each user's flat contribution, laid out as `exact_sum` lays out their sum."""
    x = indicators(spec, histories)
    triu = np.triu_indices(spec.width) if spec.kind == "cooccurrence" else None
    for row, (items, _) in zip(x, histories, strict=True):
        if spec.kind == "popularity":
            yield row
        elif triu is not None:
            yield np.outer(row, row)[triu]
        else:
            yield np.outer(pop.text.code(items, spec.rank), row).ravel()


def _round_params(cfg: RunConfig, spec: StatisticSpec, dim: int, z: float, n: int, delta: float):  # noqa: ANN202
    """The release's parameters as `DistributedDpRelease.encoding_for` makes them: every user asked."""
    base = calibration(clip_norm=spec.sensitivity, dim=dim, noise_multiplier=z, population=n,
                       ring_bits=cfg.secagg.ring_bits, delta=delta).params
    return round_parameters(base, asked=n, survivor_fraction=cfg.user_dp.survivor_fraction)


def _distributed_sum(spec: StatisticSpec, pop: Population, histories: list[tuple[np.ndarray, np.ndarray]], params,
                     rng: np.random.Generator, ledger: PrivacyLedger, kind: str) -> tuple[np.ndarray, float]:
    """(the decoded noisy sum, its noise std): every user's encoding (noise share included) added in the ring."""
    enc = DistributedEncoding(params)
    total = np.zeros(params.padded_dim, dtype=params.ring_dtype)
    n = 0
    for flat in contributions(spec, pop, histories):
        np.add(total, enc.encode(flat, rng=rng), out=total)  # unsigned arithmetic wraps: the ring sum
        n += 1
    ledger.record_distributed_release(round=0, params=params, clients_aggregated=n, release=kind)
    return enc.decode_sum(total, n), enc.noise_std(n)


@dataclass
class Parts:
    """`HybridScorer.components` of every evaluated user, as (users, M) float32 matrices (pop: one row)."""

    pop: Population

    def __post_init__(self) -> None:
        users = self.pop.data.users
        x = self.pop.data.binary[users]
        profile = np.asarray(x @ self.pop.text.table.astype(np.float64))  # (U, d): sum of whitened vectors
        self.profile = profile
        self.text = maxnorm_rows((profile @ self.pop.text.table.T.astype(np.float64)).astype(np.float32))
        logs = self.pop.data.binary[users].copy()
        logs.data = np.concatenate([np.log1p(np.maximum(self.pop.data.splits[u].train_weights, 0.0))
                                    for u in users])
        self.floor_text = maxnorm_rows(np.asarray(logs @ self.pop.table.astype(np.float64)
                                                  ) @ self.pop.table.T.astype(np.float64)).astype(np.float32)

    def of(self, released: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """text, pop, gram, cross (those released) for these released tensors."""
        m, x = self.pop.data.num_items, self.pop.data.binary[self.pop.data.users]
        out: dict[str, np.ndarray] = {"text": self.text}
        if POP_COUNTS in released:
            out["pop"] = popularity_score(released[POP_COUNTS]).astype(np.float32)
        if GRAM_WEIGHTS in released:
            head = released[GRAM_ITEMS].astype(np.int64)
            scores = np.zeros((x.shape[0], m), dtype=np.float32)
            scores[:, head] = maxnorm_rows(np.asarray(x[:, head] @ released[GRAM_WEIGHTS].astype(np.float64)))
            out["gram"] = scores
        if CROSS_WEIGHTS in released:
            w = released[CROSS_WEIGHTS].astype(np.float64)
            head = self.profile[:, : w.shape[0]]
            norm = np.linalg.norm(head, axis=1, keepdims=True)
            codes = np.divide(head, norm, out=np.zeros_like(head), where=norm > 0)
            scores = np.zeros((x.shape[0], m), dtype=np.float32)
            scores[:, released[CROSS_ITEMS].astype(np.int64)] = maxnorm_rows(codes @ w)
            out["cross"] = scores
        return out

    def check(self, released: dict[str, np.ndarray], weights: dict[str, float], rows: int = 25) -> float:
        """The largest |difference| between these matrices' blend and `HybridScorer.score` on the first rows."""
        from fedrec.simulations.hybrid_eval import blend

        parts = self.of(released)
        mine = blend(parts, weights, len(self.pop.data.users))
        scorer = HybridScorer(weights, released, self.pop.data.num_items)
        worst = 0.0
        for row, u in enumerate(self.pop.data.users[:rows]):
            theirs = scorer.score(self.pop.data.splits[u].train_items, self.pop.text)
            worst = max(worst, float(np.abs(mine[row] - theirs).max()))
        return worst


def describe(phase: ReleasePhase) -> dict[str, Any]:
    return {"epsilon": phase.epsilon, "unit": phase.unit, "delta": phase.delta, "noise": phase.noise,
            "release_seconds": round(phase.seconds, 2)}
