"""Calibration: t survivors carry the target noise, wrap-around stays below its target, epsilon tracks the central
Gaussian's (never below it), and `calibrate_for_epsilon` finds the smallest z that meets a target."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from dp_accounting import dp_event

from fedrec.shared.privacy.distributed_dp import accounting, calibration, samplers
from fedrec.shared.privacy.distributed_dp.params import ParameterError


@pytest.mark.parametrize(("n", "t", "z", "bits", "dim"), [
    (10, 5, 1.0, 32, 221_244),
    (10, 2, 5.0, 32, 1_000_000),
    (10_000, 5_000, 1.0, 32, 100_000),  # the ring binds
    (100_000, 50_000, 2.0, 64, 1_000_000),
])
def test_calibration_meets_every_target(n: int, t: int, z: float, bits: int, dim: int) -> None:
    c = calibration.calibrate(clip_norm=0.5, dim=dim, noise_multiplier=z, min_survivors=t, max_clients=n,
                              ring_bits=bits, rounds=50, delta=1e-6, rotation_seed=3)
    p = c.params
    assert p.accounted_variance >= (p.scale * z * p.clip_norm) ** 2  # t survivors: at least the central noise
    assert p.noise_multiplier >= z
    assert c.wrap_probability_per_round <= 1e-9
    assert c.log10_wrap_probability_per_round <= -9
    assert c.binding_constraint in ("wrap", "sampler", "float")
    assert p.client_variance <= samplers.MAX_VARIANCE
    assert c.epsilon >= c.central_epsilon * (1 - 1e-12)
    assert c.epsilon <= c.central_epsilon * 1.06
    assert 0 <= c.l2_inflation < 1e-3 and 0 <= c.rounding_noise_increase < 1e-6
    assert c.event == p.dp_event()
    assert json.loads(json.dumps(c.to_json()))["params"] == p.to_json()


def test_the_ring_constraint_picks_the_largest_safe_scale() -> None:
    c = calibration.calibrate(clip_norm=1.0, dim=100_000, noise_multiplier=1.0, min_survivors=5_000,
                              max_clients=10_000, rotation_seed=1)
    assert c.binding_constraint == "wrap"
    assert c.wrap_probability_per_round <= 1e-9
    p = c.params
    larger = p.scale * 1.001  # 0.1% more scale would break the target
    signal = (p.max_clients * larger * p.clip_norm) ** 2 / p.padded_dim
    noise = p.max_clients * (larger * 1.0 * p.clip_norm) ** 2 / p.min_survivors
    log_p = math.log(p.padded_dim) + calibration.log_wrap_probability(
        signal_proxy=signal, noise_variance=noise, threshold=2.0**30 - p.max_clients, mechanism="skellam")
    assert log_p > math.log(1e-9)


@pytest.mark.parametrize("mechanism", ["skellam", "dgauss"])
def test_tail_bound_holds_against_simulation(mechanism: str) -> None:
    """Chernoff bound >= the empirical frequency of |signal + noise| >= A (and is not absurdly loose)."""
    rng = np.random.default_rng(4)
    v, signal_proxy, n = 50.0, 30.0, 300_000
    noise = samplers.skellam(rng, v, n) if mechanism == "skellam" else samplers.discrete_gaussian(rng, v, n)
    signal = 2.0 * rng.binomial(30, 0.5, size=n) - 30  # a sum of 30 Rademachers: proxy 30
    for a in (15.0, 25.0, 35.0):
        bound = math.exp(calibration.log_wrap_probability(signal_proxy=signal_proxy, noise_variance=v, threshold=a,
                                                          mechanism=mechanism))
        freq = float(np.mean(np.abs(signal + noise) >= a))
        assert freq <= bound
        assert bound < 100 * max(freq, 1 / n)


def test_skellam_tails_are_heavier_than_gaussian_ones() -> None:
    kw = dict(signal_proxy=0.0, noise_variance=100.0, threshold=200.0)
    assert calibration.log_wrap_probability(mechanism="skellam", **kw) > \
        calibration.log_wrap_probability(mechanism="dgauss", **kw)


def test_ring_too_small_and_noise_too_large_are_clear_errors() -> None:
    with pytest.raises(calibration.CalibrationError, match="64"):
        calibration.calibrate(clip_norm=1.0, dim=16, noise_multiplier=5e4, min_survivors=1, max_clients=10**8)
    ok = calibration.calibrate(clip_norm=1.0, dim=16, noise_multiplier=5e4, min_survivors=1, max_clients=10**8,
                               ring_bits=64)
    assert ok.wrap_probability_per_round <= 1e-9
    with pytest.raises(calibration.CalibrationError, match="sampler"):
        calibration.calibrate(clip_norm=1.0, dim=16, noise_multiplier=1e6, min_survivors=1, max_clients=2)


@pytest.mark.parametrize(("kwargs", "match"), [
    (dict(noise_multiplier=0.0), "noise_multiplier"),
    (dict(wrap_probability=0.0), "wrap_probability"),
    (dict(rounds=0), "rounds"),
    (dict(delta=1.0), "delta"),
    (dict(clip_norm=-1.0), "clip_norm"),
    (dict(dim=0), "dim"),
    (dict(min_survivors=0), "min_survivors"),
    (dict(max_clients=2), "max_clients"),
    (dict(ring_bits=16), "ring_bits"),
    (dict(mechanism="laplace"), "mechanism"),
])
def test_bad_arguments_name_the_field(kwargs: dict, match: str) -> None:
    args = dict(clip_norm=1.0, dim=100, noise_multiplier=1.0, min_survivors=3, max_clients=5)
    args.update(kwargs)
    with pytest.raises(ParameterError, match=match):
        calibration.calibrate(**args)


def test_calibrate_for_epsilon_finds_the_smallest_sufficient_noise() -> None:
    common = dict(clip_norm=1.0, dim=50_000, min_survivors=20, max_clients=40, rotation_seed=5)
    c = calibration.calibrate_for_epsilon(4.0, 1e-5, 30, tolerance=1e-3, **common)
    assert c.epsilon <= 4.0
    below = calibration.calibrate(noise_multiplier=c.noise_multiplier * (1 - 2e-3), rounds=30, delta=1e-5, **common)
    assert below.epsilon > 4.0
    # the Gaussian needs about the same z for the same target (the Skellam costs ~nothing at this scale)
    gauss = [z for z in np.linspace(c.noise_multiplier * 0.97, c.noise_multiplier * 1.001, 60)
             if accounting.epsilon([dp_event.SelfComposedDpEvent(dp_event.GaussianDpEvent(float(z)), 30)],
                                   delta=1e-5) <= 4.0]
    assert gauss and gauss[0] <= c.noise_multiplier <= gauss[0] * 1.03


def test_calibrate_for_epsilon_out_of_reach() -> None:
    with pytest.raises(calibration.CalibrationError, match="out of reach"):
        calibration.calibrate_for_epsilon(1e-4, 1e-5, 1000, clip_norm=1.0, dim=1000, min_survivors=2,
                                          max_clients=3)
    with pytest.raises(ParameterError, match="target_epsilon"):
        calibration.calibrate_for_epsilon(-1.0, 1e-5, 10, clip_norm=1.0, dim=1000, min_survivors=2, max_clients=3)
