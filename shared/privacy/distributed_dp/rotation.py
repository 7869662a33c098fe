"""Randomized Hadamard rotation: spreads an update's energy evenly over the coordinates before it is discretised.

Why: the ring Z_2^b holds each coordinate of the *sum* modulo 2^b. A clipped update (||x||_2 <= S) may put all of
its mass on one coordinate (|x_i| = S), which would force a tiny scale to avoid wrap-around. After y = H D x, with D
a diagonal of random signs and H the orthonormal Walsh-Hadamard matrix, every coordinate y_j is a Rademacher sum
sum_k (H_jk D_k) x_k with coefficients of magnitude 1/sqrt(d): by Hoeffding's lemma it is sub-Gaussian with variance
proxy ||x||^2 / d, whatever x is (as long as x does not depend on the signs). That is what lets the calibration
bound the wrap-around probability with a scale of about 2^(b-1) / (k sqrt(signal + noise)) instead of 2^(b-1)/S.
Kairouz, Liu & Steinke 2021 (Section 4.2, "flattening") and Agarwal, Kairouz & Liu 2021 use the same step;
TFF's `HadamardTransformFactory` in `tensorflow_federated/python/aggregators/rotation.py` is the model followed here
(pad with zeros to a power of two, multiply by random +-1, fast Walsh-Hadamard transform, inverse in reverse).

The signs come from a *public* per-round seed (clients and server need the same D; the rotation hides nothing and
the DP guarantee does not rely on it). They are derived with SHAKE-256 rather than a numpy generator so that every
client and the server get bit-identical signs whatever numpy version or platform they run (numpy only promises
stream stability for bit generators, not for `Generator` methods).

H is symmetric, orthonormal and its own inverse (H H = I), so the inverse of y = H D x is x = D H y.
"""

from __future__ import annotations

import hashlib

import numpy as np

SEED_BITS = 128
#: The largest padded dimension: 2^24 (16.8M coordinates, 128 MiB per float64 vector).
MAX_PADDED_DIM = 2**24
_LABEL = b"fedrec/distributed-dp/v1/hadamard-signs"


def padded_dim(dim: int) -> int:
    """The smallest power of two >= dim (and >= 1)."""
    if isinstance(dim, bool) or not isinstance(dim, int | np.integer) or dim < 1:
        raise ValueError(f"dim must be an integer >= 1, found {dim!r}")
    out = 1 << (int(dim) - 1).bit_length()
    if out > MAX_PADDED_DIM:
        raise ValueError(f"dim {dim} pads to {out} > {MAX_PADDED_DIM} coordinates; split the update")
    return out


def _check_seed(seed: int) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**SEED_BITS:
        raise ValueError(f"rotation seed must be an int in [0, 2^{SEED_BITS}), found {seed!r}")


def signs(seed: int, n: int) -> np.ndarray:
    """n random +-1.0 (float64), a deterministic function of the public seed: bit i of SHAKE-256(label, seed, n)."""
    _check_seed(seed)
    material = _LABEL + seed.to_bytes(SEED_BITS // 8, "big") + int(n).to_bytes(8, "big")
    bits = np.unpackbits(np.frombuffer(hashlib.shake_256(material).digest((n + 7) // 8), dtype=np.uint8))[:n]
    return 1.0 - 2.0 * bits.astype(np.float64)


def fwht(x: np.ndarray) -> np.ndarray:
    """Orthonormal fast Walsh-Hadamard transform of a vector whose length is a power of two (a new float64 array).

    log2(d) butterfly passes, (a, b) -> (a + b, a - b) over blocks of doubling size, then a 1/sqrt(d) scale so the
    transform is orthonormal (and therefore its own inverse). O(d log d) time, two d-sized buffers.
    """
    v = np.array(x, dtype=np.float64, copy=True).ravel()
    n = v.size
    if n == 0 or n & (n - 1):
        raise ValueError(f"length must be a power of two, found {n}")
    h = 1
    tmp = np.empty(n // 2, dtype=np.float64)
    while h < n:
        blocks = v.reshape(-1, 2, h)
        a, b = blocks[:, 0, :], blocks[:, 1, :]
        t = tmp.reshape(-1, h)
        np.subtract(a, b, out=t)
        a += b
        b[...] = t
        h *= 2
    v *= 1.0 / np.sqrt(n)
    return v


def rotate(x: np.ndarray, seed: int) -> np.ndarray:
    """y = H D [x, 0...]: x zero-padded to `padded_dim(len(x))`, signs from `seed`, orthonormal WHT (float64)."""
    v = np.asarray(x, dtype=np.float64).ravel()
    n = padded_dim(v.size)
    padded = np.zeros(n, dtype=np.float64)
    padded[: v.size] = v
    padded *= signs(seed, n)
    return fwht(padded)


def unrotate(y: np.ndarray, seed: int, dim: int) -> np.ndarray:
    """The exact inverse of `rotate`: x = D H y, truncated to the original `dim` coordinates."""
    v = np.asarray(y, dtype=np.float64).ravel()
    n = v.size
    if n != padded_dim(dim):
        raise ValueError(f"a rotated vector of dim {dim} has {padded_dim(dim)} coordinates, found {n}")
    out = fwht(v)
    out *= signs(seed, n)
    return out[:dim]
