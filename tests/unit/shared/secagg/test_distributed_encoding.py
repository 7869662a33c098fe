"""Distributed DP through SecAgg+: the clients' encodings (noise shares included) unmask to the sum of their
clipped updates plus Skellam noise of the calibrated size, with 30% of the clients dropping out."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedrec.server.distributed_release import calibration
from fedrec.shared.privacy.distributed_dp import DistributedDpParams
from fedrec.shared.secagg.distributed_encoding import DistributedEncoding, round_parameters


def _encodings(n: int, dim: int, *, z: float, fraction: float, population: int = 50, seed: int = 0):
    base = calibration(clip_norm=1.0, dim=dim, noise_multiplier=z, population=population, ring_bits=32).params
    params = round_parameters(base, asked=n, survivor_fraction=fraction)
    rng = np.random.default_rng(seed)
    xs = {c: rng.normal(size=dim) for c in range(1, n + 1)}
    xs = {c: x * min(1.0, 0.9 / np.linalg.norm(x)) for c, x in xs.items()}  # within the clip norm
    enc = DistributedEncoding(params)
    return base, params, enc, xs, {c: enc.encode(x) for c, x in xs.items()}


def test_round_parameters_keep_the_calibrated_total_noise_whatever_the_cohort() -> None:
    base = calibration(clip_norm=2.0, dim=3000, noise_multiplier=1.3, population=500, ring_bits=32).params
    events = set()
    for asked in (1, 7, 40, 500):
        p = round_parameters(base, asked=asked, survivor_fraction=0.9)
        assert p.min_survivors == max(1, math.ceil(0.9 * asked))
        assert p.accounted_variance >= base.accounted_variance  # never less noise than calibrated
        assert p.accounted_variance == pytest.approx(base.accounted_variance, rel=1e-11)
        assert p.noise_multiplier == pytest.approx(1.3, rel=1e-11)
        assert p.rotation_seed != base.rotation_seed  # a fresh public seed every round
        assert DistributedDpParams.from_json(p.to_json()) == p
        events.add((p.l1_sensitivity, p.l2_sensitivity))
    assert len(events) == 1  # the sensitivities do not depend on the cohort either


def test_unmasked_sum_is_the_true_sum_plus_the_calibrated_noise_with_dropouts(secagg_round) -> None:
    n, dim, z = 20, 700, 0.5
    _, params, enc, xs, encoded = _encodings(n, dim, z=z, fraction=0.5)
    dropped = {3, 8, 11, 15, 19, 20}  # 30%: they never send their masked input
    result = secagg_round(encoded, ring_bits=params.ring_bits, drop={"masked-input": dropped})
    survivors = result.survivors
    assert set(survivors) == set(range(1, n + 1)) - dropped and len(survivors) >= params.min_survivors
    estimate = enc.decode_sum(result.total, len(survivors))
    truth = sum(xs[c] for c in survivors)
    error = estimate - truth
    std = enc.noise_std(len(survivors))
    assert std >= z * 1.0 * (1 - 1e-9)  # at least the central noise z S, from t shares alone
    assert std == pytest.approx(z * math.sqrt(len(survivors) / params.min_survivors), rel=1e-6)
    # 700 coordinates of (nearly) Gaussian noise: the empirical std within 10% of the stated one, mean near 0
    assert np.std(error) == pytest.approx(std, rel=0.1)
    assert abs(float(np.mean(error))) < 4 * std / math.sqrt(dim)


def test_no_float_leaves_a_client_and_one_encoding_alone_is_noisy() -> None:
    """A client sends ring words only; even its own encoding (which SecAgg never reveals) carries its noise share:
    with t = 4 each share has variance V / 4, a std of z S / 2 per coordinate, far above the signal."""
    _, params, _, xs, encoded = _encodings(4, 300, z=1.0, fraction=1.0)
    q = encoded[1]
    assert q.dtype == np.uint32 and q.shape == (params.padded_dim,)
    one = DistributedDpParams.from_json({**params.to_json(), "min_survivors": 1})
    error = DistributedEncoding(one).decode_sum(q, 1) - xs[1]
    assert np.std(error) == pytest.approx(0.5, rel=0.15)


def test_decode_refuses_fewer_survivors_than_accounted_and_a_wrong_dimension() -> None:
    _, params, enc, _, encoded = _encodings(5, 100, z=1.0, fraction=1.0)
    with pytest.raises(ValueError, match="min_survivors"):
        enc.decode_sum(encoded[1], 4)
    with pytest.raises(ValueError, match="coordinates"):
        enc.vector_dim(101)
    with pytest.raises(ValueError, match="coordinates"):
        enc.encode(np.zeros(99))


def test_an_update_over_the_clip_norm_is_clipped_not_refused() -> None:
    """Noise switched off (variance 0, which no DP event accepts) to see the encoded signal: clipped to S."""
    _, params, _, _, _ = _encodings(1, 64, z=1.0, fraction=1.0)
    quiet = DistributedEncoding(DistributedDpParams.from_json({**params.to_json(), "client_variance": 0.0}))
    big = np.full(64, 10.0)  # norm 80 >> S = 1
    decoded = quiet.decode_sum(quiet.encode(big), 1)
    assert np.linalg.norm(decoded) <= params.l2_sensitivity / params.scale * (1 + 1e-9)
    assert np.allclose(decoded, big / np.linalg.norm(big), atol=2 * math.sqrt(64) / params.scale)
