"""Who is asked to train in a round: one `Sampler` per run, built once from the settings.

Two rules (`run.client_sampling`), each over the run's nodes in their stable order (`server.node_order`):

- `poisson`: every node joins independently with probability q = C / N, so the number asked varies. This is
  what the user-level accountant's amplification by sampling assumes; a node that fails is a dropout, never
  replaced by another (a resample would change the distribution the accountant analysed).
- `fixed`: exactly C distinct nodes. No amplification is claimed for it. Under user-level DP only the whole
  population (C = N: full participation) is allowed (`check_user_level_sampling`): a fixed-size cohort of C < N is
  not a mechanism the add/remove accountant covers (adding one user displaces another, so the sum moves by up to
  2S), and Poisson sampling is accounted exactly.

Where the randomness comes from depends on whether the sample must stay secret:

- With user-level DP the sample is secret (the accountant assumes nobody knows who was sampled): a PCG64
  generator seeded from 128 bits of `secrets`, kept only in the run's secret checkpoint (`secret_state`,
  `restore`) so a resumed run draws exactly the sample an uninterrupted one would have.
- Without it, reproducibility wins: round r's sample comes from `default_rng([seed, 0, r])`, so two runs with the
  same seed ask the same users, on either engine, and a resumed run needs no saved state.

Indices are drawn, never node ids: ids are 64-bit unsigned and numpy would round them.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

import numpy as np

from fedrec.shared.config import ConfigError, RunConfig


def check_user_level_sampling(cfg: RunConfig, population: int) -> None:
    """Refuse a fixed-size cohort smaller than the population under user-level DP (ConfigError, before round 1).

    With a fixed cohort of C out of N, adding a user to the data set displaces another from the cohort, so the
    sum changes by up to 2S (or the mechanism needs replace-one accounting): accounting it as Gaussian(z) under
    add/remove adjacency with sensitivity S would under-state epsilon (for N = 40, C = 10, z = 1 the claimed
    (2.086, 0.0173) really needs delta of about 0.03). Full participation (C = N) is exact: every user is in every
    round, one user changes the sum by at most S.
    """
    if not cfg.user_dp.enabled or cfg.run.client_sampling != "fixed":
        return
    cohort = cfg.run.clients_sampled(population)
    if cohort < population:
        raise ConfigError(
            f"run.client_sampling = 'fixed' samples {cohort} of {population} clients per round, and user-level DP "
            "cannot account a fixed-size cohort smaller than the population under add/remove adjacency (adding "
            "one user displaces another, so the sum's sensitivity is 2S, not S). Set run.client_sampling = "
            "\"poisson\" (each client joins with probability C/N, amplification by sampling accounted exactly), or "
            "ask every client every round (run.fraction_train = 1)")


class Sampler:
    """The run's client sample, round by round."""

    def __init__(self, cfg: RunConfig, population: int, *, secret: bool) -> None:
        self.poisson = cfg.run.client_sampling == "poisson"
        self.size = cfg.run.clients_sampled(population)  # C: the expected (Poisson) or exact (fixed) sample size
        self.population = population
        self.seed = cfg.run.seed
        self._secret = np.random.default_rng(secrets.randbits(128)) if secret else None

    @property
    def sample_rate(self) -> float:
        """q = C / N: each node's chance to be asked in a round (exact under Poisson sampling)."""
        return self.size / self.population

    @property
    def secret(self) -> bool:
        return self._secret is not None

    def sample(self, nodes: list[int], server_round: int) -> list[int]:
        """The node ids asked in `server_round` (Poisson: in the order of `nodes`; fixed: sorted)."""
        rng = self._secret if self._secret is not None else np.random.default_rng([self.seed, 0, server_round])
        if self.poisson:
            keep = rng.random(len(nodes)) < self.sample_rate
            return [n for n, k in zip(nodes, keep, strict=True) if k]
        return pick(nodes, self.size, rng)

    def secret_state(self) -> dict[str, Any] | None:
        """The secret generator's state (for the checkpoint), None when the sample is not secret."""
        return None if self._secret is None else self._secret.bit_generator.state

    def restore(self, state: Mapping[str, Any], *, where: str) -> None:
        """Continue from `secret_state()`: the same generator, exactly where it was."""
        if self._secret is None:
            raise ValueError(f"{where}: this run's sample is not secret; there is no sampler state to restore")
        if dict(state).get("bit_generator") != "PCG64":
            raise ValueError(f"{where}: sampler generator state is not a PCG64 state")
        self._secret.bit_generator.state = dict(state)


def pick(nodes: list[int], k: int, rng: np.random.Generator) -> list[int]:
    """k distinct node ids, sorted (indices are drawn, ids are looked up)."""
    return sorted(nodes[int(i)] for i in rng.choice(len(nodes), size=k, replace=False))
