"""The one place where a round's aggregate becomes a released update: clip -> sum -> (noise -> ledger).

A round hands over an `Aggregate`: the sum of what the clients sent (each contribution already bounded by
`fedrec.shared.privacy.mechanisms.clip_update` on the device, and again by the server on a plain upload, see
`server.round`), the total weight, and whether the round was aborted. A `Release` turns it into the mean update
the server applies:

- `MeanRelease` (no user-level DP): the (weighted) mean of the contributions. Nothing is released when no
  contribution arrived or secure aggregation aborted.
- `DpFedAvgRelease` (user-level DP, McMahan et al. 2018): Gaussian noise of standard deviation z*S on the *sum*
  (`fedrec.shared.privacy.mechanisms.add_gaussian_noise`), divided by a public denominator: the expected number
  of clients q*N under Poisson sampling, the population N under full participation (the only fixed-size sample
  user-level DP allows: `server.sampling.check_user_level_sampling`). One user changes the sum by at most S, so the
  output's sensitivity is S / denominator whatever the data. Every round releases, also one with no
  survivor (noise only): the accountant counts every round, so skipping one would gain nothing. Only a secure
  round that aborted releases nothing, and then nothing enters the ledger. Each release is one `DpEvent` in the
  user-level `PrivacyLedger` (PoissonSampled(q, Gaussian(z)), or Gaussian(z) without amplification).

Randomness: the noise comes from a numpy PCG64 generator seeded from 128 bits of `secrets`, so nobody who sees the
released adapters can predict it; it is not a CSPRNG stream and has no floating-point hardening (Mironov 2012),
which the report says. A resumable run keeps the generator's state in its secret checkpoint.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedrec.shared.config import RunConfig
from fedrec.shared.privacy.budget import PrivacyBudget
from fedrec.shared.privacy.calibrate import default_user_delta
from fedrec.shared.privacy.events import dpfedavg_event
from fedrec.shared.privacy.ledger import PrivacyLedger
from fedrec.shared.privacy.mechanisms import add_gaussian_noise
from fedrec.shared.protocol import State

RNG_DESCRIPTION = ("numpy PCG64 seeded from 128-bit secrets (Python `secrets`); Gaussian samples in float64, "
                   "not a CSPRNG stream, no floating-point hardening")


@dataclass
class Aggregate:
    """What a round collected. `total`: the (weighted) sum of the contributions in float64, None when nothing
    arrived; `weight`: the sum of the weights (the number of contributions under equal weights);
    `aborted`: why secure aggregation released nothing, else None."""

    total: State | None
    weight: float
    contributors: int
    aborted: str | None = None
    discarded: str | None = None  # the server learned the (noisy) sum but cannot use it: privacy spent, no update
    encoding: Any = None  # the round's secure encoding (distributed DP: its parameters go into the ledger entry)


class MeanRelease:
    """No user-level DP: the mean of the contributions (nothing when there are none)."""

    def encoding_for(self, dim: int, clip_norm: float | None, asked: int) -> None:
        """The secure encoding's noise: none (see `server.distributed_release`)."""
        return None

    def release(self, agg: Aggregate, template: State, *, sampled: int, server_round: int) -> State | None:
        if agg.aborted or agg.total is None or agg.weight <= 0:
            return None
        return {k: (np.asarray(v, dtype=np.float64) / agg.weight).astype(np.float32) for k, v in agg.total.items()}


class DpFedAvgRelease:
    """User-level DP-FedAvg: the run's noise generator, its user-level ledger, its delta and its budget."""

    #: the accountant of the report and the budget (PLD: tight for Gaussian releases), and the quick one for
    #: progress displays
    accountant = "pld"
    #: the neighbouring relation of its ledger
    adjacency = "add_or_remove_one"
    quick_accountant = "rdp"

    def __init__(self, cfg: RunConfig, population: int, *, sample_rate: float, poisson: bool) -> None:
        self.noise_multiplier = cfg.user_dp.noise_multiplier
        self.clip_norm = cfg.user_dp.clip_norm
        self.epsilon_max = cfg.user_dp.epsilon_max
        self.population = population
        self.sample_rate = sample_rate
        self.poisson = poisson
        if not poisson and sample_rate < 1.0:  # server.sampling.check_user_level_sampling refuses it earlier
            raise ValueError(f"user-level DP with a fixed cohort of {sample_rate:.3g} N clients: only Poisson "
                             "sampling or full participation can be accounted")
        self.delta = cfg.user_dp.delta or default_user_delta(population)
        if self.delta >= 1.0 / population:
            raise ValueError(f"user_dp.delta {self.delta} must be < 1/N = {1 / population:.3g}")
        self.ledger = PrivacyLedger(guarantee="user-level", subject="run", adjacency=self.adjacency)
        self._noise = np.random.default_rng(secrets.randbits(128))

    def encoding_for(self, dim: int, clip_norm: float | None, asked: int, *,
                     noise_multiplier: float | None = None) -> Any:
        """Server-side noise: the secure sum is encoded without noise (fixed point)."""
        return None

    def event(self):
        """The DpEvent of one release: PoissonSampled(q, Gaussian(z)), or Gaussian(z) without amplification."""
        return dpfedavg_event(noise_multiplier=self.noise_multiplier,
                              sample_rate=self.sample_rate if self.poisson else None)

    def would_exceed_budget(self) -> bool:
        """True when one more release would take the run past `user_dp.epsilon_max` (the report's accountant at the
        run's delta)."""
        if self.epsilon_max <= 0:
            return False
        budget = PrivacyBudget(epsilon_max=self.epsilon_max, delta=self.delta, accountant=self.accountant)
        return budget.would_exceed(self.ledger, self.event())

    def release(self, agg: Aggregate, template: State, *, sampled: int, server_round: int) -> State | None:
        """Noisy mean of the round's sum, recorded in the ledger; None (no release, no entry) if it aborted."""
        if agg.aborted:
            return None
        total = agg.total if agg.total is not None else {k: np.zeros(np.shape(v)) for k, v in template.items()}
        noisy = add_gaussian_noise(total, std=self.noise_multiplier * self.clip_norm, rng=self._noise)
        denominator = self.sample_rate * self.population if self.poisson else max(sampled, 1)
        self.ledger.record_user_level_release(round=server_round, noise_multiplier=self.noise_multiplier,
                                              sample_rate=self.sample_rate if self.poisson else None,
                                              clip_norm=self.clip_norm, clients_aggregated=agg.contributors,
                                              release="adapter")
        return {k: (v / denominator).astype(np.float32) for k, v in noisy.items()}

    def release_statistic(self, agg: Aggregate, template: State, *, name: str, noise_multiplier: float,
                          sensitivity: float, server_round: int) -> State | None:
        """A statistic's noisy *sum* (every user asked: no amplification), one Gaussian event in the ledger.

        None (no release, no entry) if secure aggregation aborted. Adding or removing one user changes the sum by
        at most `sensitivity` (each contribution is clipped to it), so N(0, (z * sensitivity)^2) per coordinate
        is the Gaussian mechanism with noise multiplier z.
        """
        if agg.aborted:
            return None
        total = agg.total if agg.total is not None else {k: np.zeros(np.shape(v)) for k, v in template.items()}
        noisy = add_gaussian_noise(total, std=noise_multiplier * sensitivity, rng=self._noise)
        self.ledger.record_user_level_release(round=server_round, noise_multiplier=noise_multiplier,
                                              sample_rate=None, clip_norm=sensitivity,
                                              clients_aggregated=agg.contributors, release=name)
        return noisy

    def secret_state(self) -> dict[str, Any]:
        """The ledger and the noise generator's state (PCG64 can be stepped backwards: it reveals past noise)."""
        return {"ledger": self.ledger.dumps(), "noise": self._noise.bit_generator.state}

    def restore(self, state: Mapping[str, Any], *, where: str) -> None:
        ledger = PrivacyLedger.loads(str(state["ledger"]), where=f"{where}: ledger")
        if ledger.guarantee != "user-level":
            raise ValueError(f"{where}: expected a user-level ledger, found a {ledger.guarantee} one")
        if dict(state["noise"]).get("bit_generator") != "PCG64":
            raise ValueError(f"{where}: noise generator state is not a PCG64 state")
        self.ledger = ledger
        self._noise.bit_generator.state = dict(state["noise"])


class StatisticRelease:
    """A statistic's released sum: noisy under user-level DP (`DpFedAvgRelease.release_statistic`), exact without."""

    def __init__(self, name: str, dp: DpFedAvgRelease | None, *, noise_multiplier: float,
                 sensitivity: float) -> None:
        self.name = name
        self.dp = dp
        self.noise_multiplier = noise_multiplier
        self.sensitivity = sensitivity

    def encoding_for(self, dim: int, clip_norm: float | None, asked: int) -> Any:
        """The run's mechanism decides (distributed DP: this statistic's noise shares at its own multiplier)."""
        if self.dp is None:
            return None
        return self.dp.encoding_for(dim, self.sensitivity, asked, noise_multiplier=self.noise_multiplier)

    def release(self, agg: Aggregate, template: State, *, sampled: int, server_round: int) -> State | None:
        if self.dp is not None:
            return self.dp.release_statistic(agg, template, name=self.name, noise_multiplier=self.noise_multiplier,
                                             sensitivity=self.sensitivity, server_round=server_round)
        if agg.aborted:
            return None
        total = agg.total if agg.total is not None else {k: np.zeros(np.shape(v)) for k, v in template.items()}
        return {k: np.asarray(v, dtype=np.float64) for k, v in total.items()}


Release = MeanRelease | DpFedAvgRelease | StatisticRelease


def weighted_sum(deltas: list[State], weights: list[float]) -> tuple[State, float]:
    """(sum_i w_i * delta_i per tensor in float64, sum_i w_i); refuses no deltas, a weight count that does not
    match, or weights that do not sum to > 0."""
    if not deltas:
        raise ValueError("no client deltas to aggregate")
    if len(weights) != len(deltas):
        raise ValueError(f"{len(deltas)} deltas but {len(weights)} weights")
    total = float(sum(weights))
    if total <= 0:
        raise ValueError(f"aggregation weights must sum to > 0, found {total}")
    out: State | None = None
    for d, w in zip(deltas, weights, strict=True):
        out = add_weighted(out, d, w)
    assert out is not None
    return out, total


def add_weighted(total: State | None, delta: State, weight: float) -> State:
    """`total` + weight * delta per tensor, in float64 (a new sum when `total` is None); `total` is updated in
    place, so a round keeps one running sum instead of every delta."""
    if total is None:
        return {k: weight * np.asarray(v, dtype=np.float64) for k, v in delta.items()}
    for k, v in delta.items():
        total[k] += weight * np.asarray(v, dtype=np.float64)
    return total


def weighted_mean(deltas: list[State], weights: list[float]) -> State:
    """sum_i w_i * delta_i / sum_i w_i, per tensor, in float64 then cast back to float32 (what MeanRelease gives)."""
    total, weight = weighted_sum(deltas, weights)
    return MeanRelease().release(Aggregate(total, weight, len(deltas)), total, sampled=len(deltas), server_round=0)


def apply_update(global_state: State, update: State, server_lr: float) -> State:
    """global + server_lr * update, per tensor, in float32."""
    return {k: (v + server_lr * update[k]).astype(np.float32) for k, v in global_state.items()}


class ServerOptimizer:
    """How a released mean update moves the global adapter (`run.server_optimizer`).

    `sgd`: global += lr * update (FedAvg). `momentum`: m = beta m + update; global += lr * m (FedAvgM, Hsu et al.
    2019): under DP the noise of successive releases partly cancels in m while the signal adds up. `adam`: FedAdam
    (Reddi et al. 2021) on the update as a pseudo-gradient. Every step is post-processing of released values, so
    its state costs no privacy; it is checkpointed (`state`/`restore`) so a resumed run continues exactly.
    """

    def __init__(self, kind: str, lr: float, momentum: float = 0.9, beta2: float = 0.99, eps: float = 1e-3) -> None:
        if kind not in ("sgd", "momentum", "adam"):
            raise ValueError(f"run.server_optimizer must be 'sgd', 'momentum' or 'adam', found {kind!r}")
        self.kind, self.lr, self.beta1, self.beta2, self.eps = kind, lr, momentum, beta2, eps
        self.m: State = {}
        self.v: State = {}
        self.steps = 0

    def step(self, global_state: State, update: State) -> State:
        if self.kind == "sgd":
            return apply_update(global_state, update, self.lr)
        self.steps += 1
        for k, u in update.items():
            u64 = np.asarray(u, dtype=np.float64)
            self.m[k] = self.beta1 * self.m.get(k, np.zeros_like(u64)) + (1 - self.beta1 if self.kind == "adam"
                                                                       else 1.0) * u64
            if self.kind == "adam":
                self.v[k] = self.beta2 * self.v.get(k, np.zeros_like(u64)) + (1 - self.beta2) * u64**2
        if self.kind == "momentum":
            step = self.m
        else:
            step = {k: self.m[k] / (np.sqrt(self.v[k]) + self.eps) for k in self.m}
        return {k: (v + self.lr * step[k]).astype(np.float32) for k, v in global_state.items()}

    def state(self) -> State:
        out = {f"m/{k}": v.astype(np.float32) for k, v in self.m.items()}
        out.update({f"v/{k}": v.astype(np.float32) for k, v in self.v.items()})
        out["steps"] = np.array([self.steps], dtype=np.float32)
        return out

    def restore(self, state: State) -> None:
        self.m = {k[2:]: np.asarray(v, dtype=np.float64) for k, v in state.items() if k.startswith("m/")}
        self.v = {k[2:]: np.asarray(v, dtype=np.float64) for k, v in state.items() if k.startswith("v/")}
        self.steps = int(np.asarray(state.get("steps", [0]))[0])
