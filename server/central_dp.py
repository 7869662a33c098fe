"""Server-side half of DP-FedAvg: Poisson client sampling, Gaussian noise on the sum, the user-level ledger.

- Sampling: each of the N known clients joins a round independently with probability q = C / N (Poisson
  sampling, what the accountant's amplification assumes). A sampled client that does not answer, or declines,
  is a dropout: it is not replaced by another client (a resample would break the sampling assumption).
- Release: noisy mean = (sum of clipped deltas + N(0, (z S)^2 I)) / (q N). The denominator is the *expected*
  number of clients, a constant, so the output's sensitivity to one user stays S / (q N).
- Accounting: one DpEvent per released aggregate (PoissonSampled(q, Gaussian(z)), or Gaussian(z) when
  sampling is not controlled: "no amplification"), kept in a `PrivacyLedger` saved with every round.
- Randomness: sampling and noise come from numpy PCG64 generators seeded from 128-bit secrets drawn with
  `secrets`, so nobody who sees the released adapters can predict who was sampled or the noise. Not a CSPRNG
  stream and no floating-point hardening (Mironov 2012); the report says so. A resumable run keeps the
  generators' states in its secret checkpoint (`secret_state`/`restore`, `fedrec.server.checkpoint`).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedrec.shared.config import RunConfig
from fedrec.shared.dp_fedavg import default_delta
from fedrec.shared.privacy.budget import PrivacyBudget
from fedrec.shared.privacy.events import dpfedavg_event
from fedrec.shared.privacy.ledger import PrivacyLedger

State = dict[str, np.ndarray]

RNG_DESCRIPTION = ("numpy PCG64 seeded from 128-bit secrets (Python `secrets`); Gaussian samples in float64, "
                   "not a CSPRNG stream, no floating-point hardening")




@dataclass
class UserLevelDP:
    """The server's DP-FedAvg state for one run: settings, secret generators, ledger and budget."""

    cfg: RunConfig
    population: int
    ledger: PrivacyLedger = field(init=False)
    delta: float = field(init=False)
    _sampler: np.random.Generator = field(init=False, repr=False)
    _noise: np.random.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.delta = self.cfg.user_dp.delta or default_delta(self.population)
        if self.delta >= 1.0 / self.population:
            raise ValueError(f"user-delta {self.delta} must be < 1/N = {1 / self.population:.3g}")
        self.ledger = PrivacyLedger(guarantee="user-level", subject="run")
        self._sampler = np.random.default_rng(secrets.randbits(128))
        self._noise = np.random.default_rng(secrets.randbits(128))

    def secret_state(self) -> dict[str, Any]:
        """What a checkpoint keeps to continue this run exactly (`fedrec.server.checkpoint`): the ledger and both
        generators' states. Secret: they determine who was and will be sampled and the noise (PCG64 can be
        stepped backwards, so they also reveal past noise)."""
        return {"ledger": self.ledger.dumps(), "sampler": self._sampler.bit_generator.state,
                "noise": self._noise.bit_generator.state}

    def restore(self, state: Mapping[str, Any], *, where: str) -> None:
        """Continue from `secret_state()`: the same ledger, and generators that go on exactly where they were."""
        ledger = PrivacyLedger.loads(str(state["ledger"]), where=f"{where}: ledger")
        if ledger.guarantee != "user-level":
            raise ValueError(f"{where}: expected a user-level ledger, found a {ledger.guarantee} one")
        for name in ("sampler", "noise"):
            if dict(state[name]).get("bit_generator") != "PCG64":
                raise ValueError(f"{where}: {name} generator state is not a PCG64 state")
        self.ledger = ledger
        self._sampler.bit_generator.state = dict(state["sampler"])
        self._noise.bit_generator.state = dict(state["noise"])

    @property
    def poisson(self) -> bool:
        return self.cfg.run.client_sampling == "poisson"

    @property
    def sample_rate(self) -> float:
        return self.cfg.run.clients_sampled(self.population) / self.population

    def event(self):
        return dpfedavg_event(noise_multiplier=self.cfg.user_dp.noise_multiplier,
                              sample_rate=self.sample_rate if self.poisson else None)

    def would_exceed_budget(self) -> bool:
        if self.cfg.user_dp.epsilon_max <= 0:
            return False
        budget = PrivacyBudget(epsilon_max=self.cfg.user_dp.epsilon_max, delta=self.delta, accountant="pld")
        return budget.would_exceed(self.ledger, self.event())

    def sample(self, nodes: list[int]) -> list[int]:
        """Poisson: each node independently with prob q (the count varies). Else: a fixed-size sample."""
        if self.poisson:
            keep = self._sampler.random(len(nodes)) < self.sample_rate
            return [n for n, k in zip(nodes, keep, strict=True) if k]
        k = self.cfg.run.clients_sampled(len(nodes))
        return sorted(nodes[int(i)] for i in self._sampler.choice(len(nodes), size=k, replace=False))

    def release(self, clipped: list[State], template: State, *, sampled: int, server_round: int) -> State:
        """Noisy mean of the clipped deltas, recorded in the ledger as one release."""
        sums: State = {}
        for key, ref in template.items():
            total = np.zeros(ref.shape, dtype=np.float64)
            for d in clipped:
                total += d[key]
            sums[key] = total
        return self.release_sum(sums, clients=len(clipped), sampled=sampled, server_round=server_round)

    def release_sum(self, clipped_sum: State, *, clients: int, sampled: int, server_round: int) -> State:
        """Noisy mean from the *sum* of `clients` clipped deltas, recorded in the ledger as one release.

        Secure aggregation hands over only this sum; the noise, the denominator and the ledger entry are the same
        as for `release`, whose sum the server computes itself.
        """
        z, s = self.cfg.user_dp.noise_multiplier, self.cfg.user_dp.clip_norm
        denominator = self.sample_rate * self.population if self.poisson else max(sampled, 1)
        out: State = {}
        for key, total in clipped_sum.items():
            noisy = np.asarray(total, dtype=np.float64) + self._noise.normal(0.0, z * s, size=total.shape)
            out[key] = (noisy / denominator).astype(np.float32)
        self.ledger.record_user_level_release(round=server_round, noise_multiplier=z,
                                              sample_rate=self.sample_rate if self.poisson else None,
                                              clip_norm=s, clients_aggregated=clients)
        return out
