"""Fixed-point encoding: exact sums without overflow at the worst case, no silent clipping, small quantization
error next to the DP noise."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedrec.shared.config import RunConfig
from fedrec.shared.privacy.mechanisms import clip_update
from fedrec.shared.secagg.encoding import EncodingError, FixedPointEncoding, add, round_encoding
from fedrec.shared.secagg.vectors import flatten_state, unflatten_state


@pytest.mark.parametrize("bits", [32, 64])
def test_worst_case_sum_does_not_overflow(bits: int) -> None:
    """max_clients inputs all at +S (or all at -S) on one coordinate: the decoded sum is exactly +-n S."""
    # Prepare
    n, s = 1000, 2.5
    enc = FixedPointEncoding(clip_norm=s, max_clients=n, ring_bits=bits)
    for sign in (1.0, -1.0):
        x = np.zeros(3)
        x[1] = sign * s
        # Execute
        total = np.zeros(3, dtype=enc.dtype)
        for _ in range(n):
            total = add(total, enc.encode(x))
        # Assert
        assert n * enc.bound < 2 ** (bits - 1)
        assert enc.decode_sum(total, n)[1] == pytest.approx(sign * n * s, rel=1e-12)


@settings(max_examples=40, deadline=None, database=None)
@given(bits=st.sampled_from([32, 64]), n=st.integers(1, 50), d=st.integers(1, 300), s=st.floats(1e-3, 1e3),
       seed=st.integers(0, 2**32 - 1))
def test_decoded_sum_is_the_sum_of_the_clipped_inputs_within_the_bound(bits, n, d, s, seed) -> None:
    """Random deltas clipped to input_clip_norm: each encodes (||q/scale|| <= S), the ring sum decodes to their
    float sum within the stated quantization bound, and unflatten(flatten) is the identity."""
    # Prepare
    rng = np.random.default_rng(seed)
    enc = FixedPointEncoding(clip_norm=s, max_clients=n, ring_bits=bits)
    total, plain = np.zeros(d, dtype=enc.dtype), np.zeros(d)
    for _ in range(n):
        state = {"b": rng.normal(size=(d,)).astype(np.float32) * s * rng.uniform(0.01, 3)}
        clipped, _ = clip_update(state, clip_norm=enc.input_clip_norm(d))
        x = flatten_state(clipped)
        # Execute
        q = enc.encode(x)
        total = add(total, q)
        plain += x
        # Assert
        assert np.linalg.norm(q.view(np.int32 if bits == 32 else np.int64).astype(np.float64)) / enc.scale <= s
    error = np.abs(enc.decode_sum(total, n) - plain)
    bound = enc.quantization_error_bound(d, n)
    assert error.max() <= bound["per_coordinate"] * (1 + 1e-9) + 1e-12
    assert np.array_equal(unflatten_state(plain, {"b": np.zeros(d, np.float32)})["b"], plain.astype(np.float32))


def test_refuses_instead_of_clipping() -> None:
    """An input over the bound (or non-finite) raises; nothing is clipped per coordinate."""
    enc = FixedPointEncoding(clip_norm=1.0, max_clients=10)
    with pytest.raises(EncodingError, match=r"exceeds S = 1"):
        enc.encode(np.array([0.8, 0.8]))
    with pytest.raises(EncodingError, match=r"non-finite"):
        enc.encode(np.array([np.nan]))


def test_ring_too_small_is_a_configuration_error() -> None:
    """Too many clients for a 32-bit ring: an error that says to use 64 bits, not a silent loss of precision."""
    with pytest.raises(ValueError, match=r"use ring_bits=64"):
        FixedPointEncoding(clip_norm=1.0, max_clients=2**20, ring_bits=32)
    assert FixedPointEncoding(clip_norm=1.0, max_clients=2**20, ring_bits=64).bound >= 2**42


def test_default_quantization_error_is_negligible_next_to_the_dp_noise() -> None:
    """Defaults (S = 1, z = 1, 10 clients, 32-bit ring, a 221k-parameter adapter): the worst-case rounding error
    of the sum is < 1e-7 of the noise std per coordinate, and < 1e-7 of the noise's L2 norm."""
    cfg = RunConfig.from_mapping({"user_dp.enabled": True, "secagg.enabled": True})
    n, d = cfg.run.clients_per_round, 221_444
    enc = round_encoding(cfg, n)
    bound = enc.quantization_error_bound(d, n)
    noise_std = cfg.user_dp.noise_multiplier * cfg.user_dp.clip_norm
    assert bound["per_coordinate"] / noise_std < 1e-7
    assert bound["l2"] / (noise_std * math.sqrt(d)) < 1e-7
    assert bound["clip_margin"] / cfg.user_dp.clip_norm < 1e-5
