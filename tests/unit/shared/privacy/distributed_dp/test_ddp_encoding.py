"""Client encode -> ring sum (as SecAgg computes it) -> server decode: the float sum within the documented error."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedrec.shared.privacy.distributed_dp import calibration, encoding, rotation
from fedrec.shared.privacy.distributed_dp.params import DistributedDpParams


def make_params(**overrides: object) -> DistributedDpParams:
    values: dict[str, object] = dict(mechanism="skellam", clip_norm=1.0, dim=1000, padded_dim=1024, scale=1e4,
                                     ring_bits=32, client_variance=0.0, min_survivors=3, max_clients=5,
                                     rotation_seed=99)
    values.update(overrides)
    if "dim" in overrides and "padded_dim" not in overrides:
        values["padded_dim"] = rotation.padded_dim(values["dim"])  # type: ignore[arg-type]
    return DistributedDpParams(**values)  # type: ignore[arg-type]


def updates(n: int, dim: int, seed: int, clip: float = 1.0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        x = rng.normal(size=dim)
        out.append(x * (clip * rng.uniform(0.3, 1.0) / np.linalg.norm(x)))
    out[0] *= clip / np.linalg.norm(out[0])  # one exactly at the clip
    return out


@pytest.mark.parametrize("ring_bits", [32, 64])
def test_noise_free_round_trip_is_within_the_deterministic_rounding_bound(ring_bits: int) -> None:
    params = make_params(ring_bits=ring_bits)
    xs = updates(5, params.dim, 1)
    rng = np.random.default_rng(2)
    enc = [encoding.encode_with_noise(x, params, rng) for x in xs]
    assert all(e.dtype == params.ring_dtype and e.shape == (params.padded_dim,) for e in enc)
    dec = encoding.decode_sum(encoding.ring_sum(enc, ring_bits), params, survivors=5)
    err = float(np.linalg.norm(dec - sum(xs)))
    assert err <= encoding.error_bound(params, 5) * (1 + 1e-9)
    assert err > 0  # randomized rounding did happen


def test_integer_encoding_respects_the_l2_sensitivity() -> None:
    params = make_params(scale=50.0)  # small scale: rounding matters, the bound still holds
    rng = np.random.default_rng(3)
    for x in updates(20, params.dim, 4):
        q, tries = encoding.encode_integer(x, params, rng)
        assert float(np.linalg.norm(q.astype(np.float64))) <= params.l2_sensitivity
        assert float(np.abs(q).sum()) <= params.l1_sensitivity
        assert tries >= 1


@pytest.mark.parametrize("mechanism", ["skellam", "dgauss"])
def test_noisy_round_trip_has_the_calibrated_noise(mechanism: str) -> None:
    cal = calibration.calibrate(clip_norm=0.5, dim=20_000, noise_multiplier=1.0, min_survivors=4, max_clients=6,
                                mechanism=mechanism, rotation_seed=7)
    params = cal.params
    xs = updates(6, params.dim, 5, clip=0.5)
    enc = [encoding.encode_with_noise(x, params, np.random.default_rng(100 + i)) for i, x in enumerate(xs)]
    dec = encoding.decode_sum(encoding.ring_sum(enc, params.ring_bits), params, survivors=6)
    err = dec - sum(xs)
    std = encoding.noise_std(params, 6)
    assert std >= 0.5 * 1.0 * math.sqrt(6 / 4)  # 6 survivors carry more than the target z S
    assert abs(err.mean()) < 5 * std / math.sqrt(err.size)
    assert abs(err.var() / std**2 - 1) < 5 * math.sqrt(2 / err.size)  # ~5% here; a 2x variance error fails


def test_t_survivors_carry_at_least_the_target_noise() -> None:
    """The sum of the noise shares of exactly t clients has variance (gamma z S)^2, the central target."""
    z, s, t = 1.3, 0.7, 5
    params = calibration.calibrate(clip_norm=s, dim=30_000, noise_multiplier=z, min_survivors=t, max_clients=9,
                                   rotation_seed=1).params
    target = (params.scale * z * s) ** 2
    assert params.accounted_variance >= target
    total = sum(encoding.noise_share(params, np.random.default_rng(i)) for i in range(t))
    assert abs(total.var() / target - 1) < 5 * math.sqrt(2 / total.size)
    # ... and a decoded sum over t survivors has noise std >= z S in float units
    assert encoding.noise_std(params, t) >= z * s


def test_masks_cancel_in_the_ring() -> None:
    """Pairwise additive masks (what SecAgg adds) cancel in the ring sum: decoding is unaffected."""
    params = make_params()
    xs = updates(3, params.dim, 8)
    rng = np.random.default_rng(9)
    enc = [encoding.encode_with_noise(x, params, rng) for x in xs]
    mask = rng.integers(0, 2**32, size=params.padded_dim, dtype=np.uint64).astype(np.uint32)
    masked = [enc[0] + mask, enc[1] - mask, enc[2]]  # uint32 arithmetic wraps mod 2^32
    assert np.array_equal(encoding.ring_sum(masked, 32), encoding.ring_sum(enc, 32))


def test_wrap_around_is_detected_not_returned() -> None:
    # d = 1: no flattening; each client sends +-gamma S = +-2^29 (the sign is the rotation's); the envelope is 2^30.
    params = make_params(dim=1, scale=2.0**29, min_survivors=1, max_clients=5)
    enc = [encoding.encode_with_noise(np.array([1.0]), params, np.random.default_rng(i)) for i in range(5)]
    assert encoding.decode_sum(encoding.ring_sum(enc[:1], 32), params, survivors=1)[0] == pytest.approx(1.0)
    with pytest.raises(encoding.WrapAroundError, match="envelope") as info:
        encoding.decode_sum(encoding.ring_sum(enc[:2], 32), params, survivors=2)  # |sum| = 2^30: at the envelope
    assert info.value.count == 1 and info.value.max_abs == 2**30
    with pytest.raises(encoding.WrapAroundError):
        encoding.decode_sum(encoding.ring_sum(enc, 32), params, survivors=5)  # |sum| = 2.5 * 2^30 wraps
    wrapped = encoding.decode_sum(encoding.ring_sum(enc, 32), params, survivors=5, check_envelope=False)
    assert wrapped[0] == pytest.approx(-3.0)  # what an unchecked decode would silently return instead of 5


def test_decode_refuses_survivor_counts_outside_the_calibration() -> None:
    params = make_params()
    total = np.zeros(params.padded_dim, dtype=np.uint32)
    for bad in (2, 6):
        with pytest.raises(ValueError, match="survivors"):
            encoding.decode_sum(total, params, survivors=bad)
    with pytest.raises(ValueError, match="ring elements"):
        encoding.decode_sum(total.astype(np.uint64), params, survivors=3)
    with pytest.raises(ValueError, match="ring elements"):
        encoding.decode_sum(total[:-1], params, survivors=3)


def test_encode_refuses_bad_updates_and_tolerates_float32_clipping() -> None:
    params = make_params()
    rng = np.random.default_rng(0)
    with pytest.raises(encoding.EncodingError, match="coordinates"):
        encoding.encode_with_noise(np.zeros(999), params, rng)
    with pytest.raises(encoding.EncodingError, match="non-finite"):
        encoding.encode_with_noise(np.full(1000, np.nan), params, rng)
    x = np.ones(1000) / math.sqrt(1000)
    with pytest.raises(encoding.EncodingError, match="clip"):
        encoding.encode_with_noise(x * 1.001, params, rng)
    q, _ = encoding.encode_integer((x * (1 + 1e-7)).astype(np.float32), params, rng)  # float32 overshoot: fine
    assert float(np.linalg.norm(q.astype(np.float64))) <= params.l2_sensitivity


@pytest.mark.parametrize("ring_bits", [32, 64])
def test_ring_conversion_round_trips_signed_values(ring_bits: int) -> None:
    half = 2 ** (ring_bits - 1)
    v = np.array([0, 1, -1, half - 1, -half, 12345, -98765], dtype=np.int64)
    r = encoding.to_ring(v, ring_bits)
    assert r.dtype == (np.uint32 if ring_bits == 32 else np.uint64)
    assert np.array_equal(encoding.centred(r, ring_bits), v)
    assert np.array_equal(encoding.centred(encoding.ring_sum([r, r], ring_bits), ring_bits),
                          np.array([0, 2, -2, -2, 0, 24690, -197530], dtype=np.int64))
