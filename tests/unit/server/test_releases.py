"""The release phase's mechanisms: noise scale from the calibrated z, one Gaussian ledger entry per release, the
budget split composed against dp-accounting directly, and the report's declaration checked by the verifier."""

from __future__ import annotations

import math

import dp_accounting
import numpy as np
import pytest

from fedrec.server.calibration import record_cost, release_noise, resolve_noise
from fedrec.server.release import Aggregate, DpFedAvgRelease, StatisticRelease
from fedrec.server.releases import declared_releases, finish, release_kinds, spec_for
from fedrec.server.sampling import Sampler
from fedrec.shared.config import ConfigError, RunConfig
from fedrec.shared.hybrid.scorer import GRAM_WEIGHTS, POP_COUNTS
from fedrec.shared.privacy.calibrate import default_user_delta

DP = {"user_dp.enabled": True, "run.client_sampling": "poisson", "run.clients_per_round": 50}


def _dp(cfg: RunConfig, population: int) -> DpFedAvgRelease:
    sampler = Sampler(cfg, population, secret=True)
    return DpFedAvgRelease(cfg, population, sample_rate=sampler.sample_rate, poisson=sampler.poisson)


def test_a_statistic_release_adds_noise_of_std_z_times_the_sensitivity_and_one_ledger_entry() -> None:
    # Prepare
    cfg = RunConfig.from_mapping(DP)
    dp = _dp(cfg, 1000)
    template = {"popularity": np.zeros(20000, dtype=np.float32)}
    total = {"popularity": np.full(20000, 7.0)}
    release = StatisticRelease("popularity", dp, noise_multiplier=0.8, sensitivity=5.0)
    # Execute
    out = release.release(Aggregate(total, 3.0, 3), template, sampled=1000, server_round=0)
    # Assert: the sum (no denominator) plus N(0, (0.8 * 5)^2)
    noise = out["popularity"] - 7.0
    assert noise.std() == pytest.approx(4.0, rel=0.03) and abs(noise.mean()) < 0.1
    [entry] = dp.ledger.entries
    assert entry.round == 0 and entry.metadata["release"] == "popularity" and entry.metadata["clip_norm"] == 5.0
    assert entry.event == dp_accounting.GaussianDpEvent(0.8)  # every user asked: no amplification
    assert release.release(Aggregate(None, 0.0, 0, aborted="x"), template, sampled=3, server_round=0) is None
    assert len(dp.ledger) == 1  # an aborted secure sum releases nothing and is not charged


def test_without_user_level_dp_a_release_is_the_exact_sum() -> None:
    out = StatisticRelease("popularity", None, noise_multiplier=0.0, sensitivity=5.0).release(
        Aggregate({"popularity": np.array([1.0, 2.0])}, 2.0, 2), {"popularity": np.zeros(2)}, sampled=2,
        server_round=0)
    assert out["popularity"].tolist() == [1.0, 2.0]


@pytest.mark.parametrize("target", [1.0, 4.0])
def test_the_budget_split_composes_to_the_target_by_dp_accounting_directly(target: float) -> None:
    """Three releases + 10 Poisson adapter rounds: z_i = c / sqrt(share_i), and PLD of the whole plan <= target."""
    # Prepare
    population = 1892
    cfg = RunConfig.from_mapping({**DP, "user_dp.target_epsilon": target, "run.rounds": 10,
                                  "hybrid.shares": "popularity:0.25,cooccurrence:0.5,cross:0.25,adapter:1"})
    # Execute
    resolved = resolve_noise(cfg, population)
    z = release_noise(resolved)
    # Assert: shares are ratios of 1/z^2
    assert z["popularity"] == pytest.approx(z["cross"]) and z["cooccurrence"] == pytest.approx(z["popularity"] / 2**0.5)
    assert resolved.user_dp.noise_multiplier == pytest.approx(z["popularity"] / 2, rel=1e-9)
    q = 50 / population
    acc = dp_accounting.pld.PLDAccountant(dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE, 1e-4)
    acc.compose(dp_accounting.ComposedDpEvent([dp_accounting.GaussianDpEvent(z[k]) for k in release_kinds(cfg)]))
    adapter = dp_accounting.GaussianDpEvent(resolved.user_dp.noise_multiplier)
    acc.compose(dp_accounting.PoissonSampledDpEvent(q, adapter), 10)
    eps = acc.get_epsilon(default_user_delta(population))
    assert target * 0.97 <= eps <= target * 1.0001  # as large as allowed, never above (calibration tolerance 1%)


def test_without_an_adapter_share_the_budget_goes_to_the_releases_and_no_adapter_round_runs() -> None:
    cfg = RunConfig.from_mapping({**DP, "user_dp.target_epsilon": 2.0, "run.rounds": 5,
                                  "hybrid.shares": "popularity:1,cooccurrence:1,cross:1"})
    resolved = resolve_noise(cfg, 500)
    assert resolved.run.rounds == 0
    assert set(release_noise(resolved)) == {"popularity", "cooccurrence", "cross"}
    with pytest.raises(ConfigError, match="no share"):
        resolve_noise(cfg.updated({"hybrid.shares": "popularity:1,cross:1"}), 500)


def test_records_never_enter_a_release_without_noise() -> None:
    """With record-level DP alone the releases take record_dp's z (no release is exact); the device adds that
    noise itself, scaled to one record's effect, so each release costs it one Gaussian with that multiplier."""
    noise = release_noise(RunConfig.from_mapping({"record_dp.enabled": True, "record_dp.noise_multiplier": 3.0}))
    assert set(noise.values()) == {3.0}
    assert set(release_noise(RunConfig()).values()) == {0.0}
    assert record_cost(3.0) == dp_accounting.GaussianDpEvent(3.0)


def test_later_releases_are_indexed_by_the_noisy_popularity_and_the_report_declares_each() -> None:
    cfg = RunConfig.from_mapping({**DP, "hybrid.gram_head": 4, "hybrid.gram_k": 3})
    with pytest.raises(ValueError, match="popularity release"):
        spec_for("cooccurrence", cfg, {}, 10)
    counts = np.array([0, 9, 1, 8, 2, 7, 3, 6, 4, 5], dtype=float)
    spec = spec_for("cooccurrence", cfg, {POP_COUNTS: counts}, 10)
    assert spec.items.tolist() == [1, 3, 5, 7]
    released = finish("cooccurrence", {"cooccurrence": np.ones(10)}, spec, cfg, sigma=0.0, population=10)
    assert released[GRAM_WEIGHTS].shape == (4, 4)
    declared = {r.name: r for r in declared_releases(cfg, 10)}
    assert declared["cooccurrence"].sensitivity == pytest.approx(math.sqrt(6))
    assert declared["popularity"].sensitivity == pytest.approx(math.sqrt(25 if 25 <= 10 else 10))
