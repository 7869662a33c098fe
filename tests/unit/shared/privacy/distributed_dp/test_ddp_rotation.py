"""Randomized Hadamard rotation: orthonormal, exactly invertible, deterministic in the public seed, flattening."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.linalg import hadamard

from fedrec.shared.privacy.distributed_dp import rotation


def test_fwht_is_the_normalised_hadamard_matrix() -> None:
    x = np.random.default_rng(0).normal(size=32)
    np.testing.assert_allclose(rotation.fwht(x), hadamard(32) @ x / math.sqrt(32), rtol=0, atol=1e-12)


@pytest.mark.parametrize("dim", [1, 2, 5, 8, 13])
def test_rotation_matrix_is_orthonormal(dim: int) -> None:
    n = rotation.padded_dim(dim)
    m = np.stack([rotation.rotate(np.eye(dim)[i], 7) for i in range(dim)], axis=1)  # (n, dim)
    assert m.shape == (n, dim)
    np.testing.assert_allclose(m.T @ m, np.eye(dim), rtol=0, atol=1e-12)


@pytest.mark.parametrize("dim", [1, 1000, 70_001])
def test_norm_preserved_and_inverse_exact(dim: int) -> None:
    x = np.random.default_rng(dim).normal(size=dim) * 3.0
    y = rotation.rotate(x, 2**127 + 5)
    assert y.size == rotation.padded_dim(dim)
    assert abs(np.linalg.norm(y) - np.linalg.norm(x)) <= 1e-9 * np.linalg.norm(x)
    back = rotation.unrotate(y, 2**127 + 5, dim)
    assert back.shape == (dim,)
    assert np.max(np.abs(back - x)) <= 1e-12 * np.linalg.norm(x)


def test_deterministic_in_the_seed() -> None:
    x = np.random.default_rng(1).normal(size=300)
    assert np.array_equal(rotation.rotate(x, 42), rotation.rotate(x, 42))
    assert not np.allclose(rotation.rotate(x, 42), rotation.rotate(x, 43))
    s = rotation.signs(42, 4096)
    assert set(np.unique(s)) == {-1.0, 1.0}
    assert abs(s.mean()) < 5 / math.sqrt(4096)
    assert np.array_equal(s[:100], rotation.signs(42, 4096)[:100])


def test_signs_are_pinned() -> None:
    """Clients and server on other numpy versions must derive the same signs: the derivation is SHAKE-256."""
    assert rotation.signs(0, 16).tolist() == [1 - 2 * int(b) for b in format(
        int.from_bytes(__import__("hashlib").shake_256(
            b"fedrec/distributed-dp/v1/hadamard-signs" + bytes(16) + (16).to_bytes(8, "big")).digest(2), "big"),
        "016b")]


def test_a_spike_is_flattened() -> None:
    """All of a one-hot vector's mass spreads evenly: every rotated coordinate has magnitude 1/sqrt(d')."""
    x = np.zeros(1000)
    x[17] = 1.0
    y = rotation.rotate(x, 3)
    np.testing.assert_allclose(np.abs(y), 1 / math.sqrt(1024), rtol=1e-12)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="dim"):
        rotation.padded_dim(0)
    with pytest.raises(ValueError, match="pads to"):
        rotation.padded_dim(rotation.MAX_PADDED_DIM + 1)
    with pytest.raises(ValueError, match="seed"):
        rotation.rotate(np.ones(3), -1)
    with pytest.raises(ValueError, match="seed"):
        rotation.rotate(np.ones(3), 2**128)
    with pytest.raises(ValueError, match="power of two"):
        rotation.fwht(np.ones(6))
    with pytest.raises(ValueError, match="coordinates"):
        rotation.unrotate(np.ones(8), 1, 3)
