"""User-level DP with the noise added by the clients: distributed DP-FedAvg (`user_dp.noise = distributed`).

The same release as `server.release.DpFedAvgRelease` (clip -> secure sum -> public denominator -> ledger entry),
except that the server adds no noise: every client adds a share of Skellam noise to its rotated, scaled and rounded
update before masking (`fedrec.shared.secagg.distributed_encoding`), so the only sum the server can unmask already
carries noise of variance V = (gamma z S)^2 per coordinate (integer units) from the t = ceil(f x asked)
survivors it needs, and more from any further survivor. Kairouz, Liu & Steinke 2021; Agarwal, Kairouz & Liu 2021;
TFF's `DistributedDpSumFactory`. `docs/distributed-dp.md` has the mechanism, the calibration and what the server
learns.

Calibration, once per run and per kind of release (`calibration`): scale gamma from
`fedrec.shared.privacy.distributed_dp.calibrate` with t = 1 (so the per-client variance it returns is the whole V,
and the sampler's precision limit holds for any t), n = the population (the most clients a round can sum, for the
wrap-around bound), the run's ring. Each round then takes t from the clients asked and mu = V / t
(`round_parameters`), so every round's DP event is the same Skellam event whatever the cohort.

Accounting: `SkellamDpEvent(Delta_1, Delta_2, V)` per release in a user-level ledger with the zero-out relation
(`replace_special`: one user's update replaced by zeros while their device still adds its noise share), read by the
`rdp-distributed` accountant. No amplification by sampling: the server picks the clients and knows who took part.
A round aborted before unmasking (fewer than t survivors) releases nothing and records nothing; a round unmasked
but unreadable (a wrap-around, `WrapAroundError`) records its event and releases nothing.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fedrec.server.release import Aggregate, DpFedAvgRelease, MeanRelease, Release
from fedrec.shared.config import RunConfig
from fedrec.shared.privacy.distributed_dp import Calibration, calibrate
from fedrec.shared.protocol import State
from fedrec.shared.secagg.distributed_encoding import DistributedEncoding, round_parameters

#: the accountant that reads Skellam events (and is the report's for this mode)
ACCOUNTANT = "rdp-distributed"
#: per-round probability bound on a modular wrap-around the scale is calibrated to
WRAP_PROBABILITY = 1e-9


def calibration(*, clip_norm: float, dim: int, noise_multiplier: float, population: int, ring_bits: int,
                delta: float = 1e-6) -> Calibration:
    """The run's calibration for one kind of release (see the module docstring): t = 1, n = population."""
    return calibrate(clip_norm=clip_norm, dim=dim, noise_multiplier=noise_multiplier, min_survivors=1,
                     max_clients=max(1, population), ring_bits=ring_bits, wrap_probability=WRAP_PROBABILITY,
                     delta=delta)


class DistributedDpRelease(DpFedAvgRelease):
    """DP-FedAvg whose noise the clients add under secure aggregation: no server noise, Skellam ledger events."""

    accountant = ACCOUNTANT
    quick_accountant = ACCOUNTANT
    adjacency = "replace_special"  # the Skellam bound's relation: one user's update zeroed, their noise share kept

    def __init__(self, cfg: RunConfig, population: int, *, sample_rate: float, poisson: bool,
                 adapter_dim: int) -> None:
        super().__init__(cfg, population, sample_rate=sample_rate, poisson=poisson)
        self.ring_bits = cfg.secagg.ring_bits
        self.survivor_fraction = cfg.user_dp.survivor_fraction
        self._calibrations: dict[tuple[int, float, float], Calibration] = {}
        self.adapter_dim = int(adapter_dim)

    def calibration_for(self, dim: int, clip_norm: float, noise_multiplier: float) -> Calibration:
        key = (int(dim), float(clip_norm), float(noise_multiplier))
        if key not in self._calibrations:
            self._calibrations[key] = calibration(clip_norm=clip_norm, dim=dim, noise_multiplier=noise_multiplier,
                                                  population=self.population, ring_bits=self.ring_bits,
                                                  delta=self.delta)
        return self._calibrations[key]

    def encoding_for(self, dim: int, clip_norm: float | None, asked: int, *,
                     noise_multiplier: float | None = None) -> DistributedEncoding:
        """This round's encoding: the run's calibration for (dim, S, z), t from `asked`, a fresh rotation seed."""
        z = self.noise_multiplier if noise_multiplier is None else noise_multiplier
        calibrated = self.calibration_for(dim, self.clip_norm if clip_norm is None else clip_norm, z)
        # the run's wrap-around bound (t = 1, n = N: the most noise and signal any round can sum) holds every round
        return DistributedEncoding(round_parameters(calibrated.params, asked=asked,
                                                    survivor_fraction=self.survivor_fraction),
                                   log10_wrap_probability=calibrated.log10_wrap_probability_per_round)

    def event(self):
        """One adapter release's event (the budget check's next step): the run's Skellam event for the adapter."""
        return self.calibration_for(self.adapter_dim, self.clip_norm, self.noise_multiplier).event

    def _record(self, agg: Aggregate, *, server_round: int, release: str) -> None:
        self.ledger.record_distributed_release(round=server_round, params=agg.encoding.params,
                                               clients_aggregated=agg.contributors, release=release,
                                               log10_wrap_probability_per_round=agg.encoding.log10_wrap_probability,
                                               **({"discarded": agg.discarded} if agg.discarded else {}))

    def release(self, agg: Aggregate, template: State, *, sampled: int, server_round: int) -> State | None:
        """The mean of the survivors' noisy sum (the noise came with it), recorded in the ledger; None if aborted."""
        if agg.aborted:
            return None
        self._require_encoding(agg)
        self._record(agg, server_round=server_round, release="adapter")
        if agg.discarded or agg.total is None:
            return None
        denominator = self.sample_rate * self.population if self.poisson else max(sampled, 1)
        return {k: (np.asarray(v, dtype=np.float64) / denominator).astype(np.float32) for k, v in agg.total.items()}

    def release_statistic(self, agg: Aggregate, template: State, *, name: str, noise_multiplier: float,
                          sensitivity: float, server_round: int) -> State | None:
        """A statistic's noisy sum as unmasked (noise from the clients), one Skellam event in the ledger."""
        if agg.aborted:
            return None
        self._require_encoding(agg)
        self._record(agg, server_round=server_round, release=name)
        if agg.discarded or agg.total is None:
            return None
        return {k: np.asarray(v, dtype=np.float64) for k, v in agg.total.items()}

    @staticmethod
    def _require_encoding(agg: Aggregate) -> None:
        if not isinstance(agg.encoding, DistributedEncoding):
            raise RuntimeError("distributed DP: the round's sum was not collected with a distributed encoding "
                               "(secure aggregation is required, RunConfig checks it)")


def user_level_release(cfg: RunConfig, population: int, sampler: Any, *, adapter_dim: int) -> Release:
    """The run's release, chosen once: the plain mean without user-level DP, DP-FedAvg with server noise, or with
    the clients' noise shares (`user_dp.noise = distributed`)."""
    if not cfg.user_dp.enabled:
        return MeanRelease()
    if cfg.user_dp.noise == "distributed":
        return DistributedDpRelease(cfg, population, sample_rate=sampler.sample_rate, poisson=sampler.poisson,
                                    adapter_dim=adapter_dim)
    return DpFedAvgRelease(cfg, population, sample_rate=sampler.sample_rate, poisson=sampler.poisson)
