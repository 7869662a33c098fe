"""Client encoding (rotate, scale, round, add a noise share, reduce mod 2^b) and the server's decode of the sum.

Client, per round (`encode_with_noise`), for a flat float update x with ||x||_2 <= S:

1. y = H D [x, 0...]: randomized Hadamard rotation with the round's public seed (`rotation`), length d' = padded_dim;
2. z = gamma y, ||z|| <= gamma S;
3. q = conditional randomized rounding of z, ||q||_2 <= Delta_2 guaranteed (`rounding`);
4. q + noise share: Skellam(client_variance) (or discrete Gaussian) per coordinate, drawn from a generator the
   client seeded from the OS CSPRNG;
5. reduce modulo 2^b in two's complement (uint32 / uint64, like `fedrec.shared.secagg.encoding`), then SecAgg masks.

Server (`decode_sum`): SecAgg yields the ring sum over the survivors U; read it as a *centred* integer in
[-2^(b-1), 2^(b-1)), divide by gamma, undo the rotation (x = D H y), truncate to d. With no wrap-around,

    decode = sum_{i in U} x_i + D H (N + R) / gamma,

N the noise (Skellam(|U| client_variance) per coordinate, exactly, for the Skellam mechanism) and R the rounding
errors, |R_j| < |U| per coordinate, so ||D H R / gamma||_2 < |U| sqrt(d') / gamma deterministically (`error_bound`).
The noise term has variance |U| client_variance / gamma^2 per coordinate in float units (>= (z S)^2 when |U| >= t).

Wrap-around: the ring only holds the sum modulo 2^b. The calibration (`calibration.calibrate`) chooses gamma so that
every coordinate of the true integer sum stays inside the *envelope* |sum_j| < 2^(b-2) except with a stated
probability. `decode_sum` checks the envelope: a centred coordinate at or beyond +-2^(b-2) means the sum left the
calibrated range, and any wrap-around of a true value with 2^(b-1) <= |sum_j| < 3 * 2^(b-2) lands exactly there.
It then raises `WrapAroundError` rather than return a silently corrupted aggregate (the round's privacy is spent
either way: the decision is post-processing of the released sum). Only a value beyond 1.5 * 2^(b-1) could wrap
back inside the envelope undetected, and its probability is below the calibrated bound.
"""

from __future__ import annotations

import math

import numpy as np

from fedrec.shared.privacy.distributed_dp import rotation, rounding, samplers
from fedrec.shared.privacy.distributed_dp.params import DistributedDpParams

#: Relative tolerance on ||x|| > S: beyond it `encode_with_noise` refuses the input (the caller did not clip);
#: within it the input is scaled back to exactly S (float32 clipping overshoots S by ~1e-7 relative).
NORM_TOLERANCE = 1e-5


class EncodingError(ValueError):
    """The input cannot be encoded under these parameters (wrong length, non-finite, norm above the clip)."""


class WrapAroundError(RuntimeError):
    """The decoded sum has coordinates outside the calibrated envelope: a probable modular wrap-around."""

    def __init__(self, message: str, *, count: int, max_abs: int) -> None:
        super().__init__(message)
        self.count = count
        self.max_abs = max_abs


def _checked_input(x: np.ndarray, params: DistributedDpParams) -> np.ndarray:
    v = np.asarray(x, dtype=np.float64).ravel()
    if v.size != params.dim:
        raise EncodingError(f"expected an update of {params.dim} coordinates, found {v.size}")
    if not np.all(np.isfinite(v)):
        raise EncodingError("the update has non-finite values")
    norm = float(np.linalg.norm(v))
    if norm > params.clip_norm * (1 + NORM_TOLERANCE):
        raise EncodingError(f"update L2 norm {norm:.9g} exceeds the clip norm S = {params.clip_norm:.9g}; clip first")
    if norm > params.clip_norm:
        v = v * (params.clip_norm / norm)
    return v


def encode_integer(x: np.ndarray, params: DistributedDpParams, rng: np.random.Generator, *,
                   max_tries: int = rounding.DEFAULT_MAX_TRIES) -> tuple[np.ndarray, int]:
    """Steps 1-3: rotate, scale, conditionally round. Returns (q as int64 of length padded_dim, rounding tries).

    ||q||_2 <= params.l2_sensitivity is guaranteed (else `rounding.RoundingError`).
    """
    v = _checked_input(x, params)
    z = rotation.rotate(v, params.rotation_seed)
    z *= params.scale
    return rounding.conditional_round(z, params.l2_sensitivity, rng, max_tries=max_tries)


def noise_share(params: DistributedDpParams, rng: np.random.Generator) -> np.ndarray:
    """One client's noise share (int64, length padded_dim): Skellam(client_variance) or N_Z(0, client_variance)."""
    if params.mechanism == "skellam":
        return samplers.skellam(rng, params.client_variance, params.padded_dim)
    return samplers.discrete_gaussian(rng, params.client_variance, params.padded_dim)


def to_ring(v: np.ndarray, ring_bits: int) -> np.ndarray:
    """Signed int64 values modulo 2^b as uint32 / uint64 (two's complement)."""
    a = np.asarray(v, dtype=np.int64)
    if ring_bits == 32:
        return (a & 0xFFFFFFFF).astype(np.uint32)
    if ring_bits == 64:
        return a.view(np.uint64).copy()
    raise ValueError(f"ring_bits must be 32 or 64, found {ring_bits}")


def centred(ring: np.ndarray, ring_bits: int) -> np.ndarray:
    """Ring elements read as signed integers in [-2^(b-1), 2^(b-1)) (int64)."""
    if ring_bits == 32:
        return np.asarray(ring, dtype=np.uint32).view(np.int32).astype(np.int64)
    if ring_bits == 64:
        return np.asarray(ring, dtype=np.uint64).view(np.int64).copy()
    raise ValueError(f"ring_bits must be 32 or 64, found {ring_bits}")


def ring_sum(vectors: list[np.ndarray], ring_bits: int) -> np.ndarray:
    """The sum modulo 2^b of ring vectors (what SecAgg gives the server; for tests and simulations)."""
    dtype = np.uint32 if ring_bits == 32 else np.uint64
    total = np.zeros_like(np.asarray(vectors[0], dtype=dtype))
    for v in vectors:
        np.add(total, np.asarray(v, dtype=dtype), out=total, dtype=dtype)  # unsigned arithmetic wraps mod 2^b
    return total


def encode_with_noise(x: np.ndarray, params: DistributedDpParams, rng: np.random.Generator, *,
                      max_tries: int = rounding.DEFAULT_MAX_TRIES) -> np.ndarray:
    """The client's whole encoding: ring vector (uint32 / uint64, length padded_dim) ready to be masked.

    `x`: the flat float update, already clipped to `params.clip_norm` (up to `NORM_TOLERANCE`). `rng`: a generator
    seeded from the OS CSPRNG for this client and round (`samplers.secure_generator()`), used for both the
    rounding and the noise; it must stay on the client.
    """
    q, _ = encode_integer(x, params, rng, max_tries=max_tries)
    q += noise_share(params, rng)
    return to_ring(q, params.ring_bits)


def decode_sum(total: np.ndarray, params: DistributedDpParams, *, survivors: int,
               check_envelope: bool = True) -> np.ndarray:
    """The float64 estimate of the sum of the survivors' updates (length dim) from their ring sum.

    `survivors`: |U|, the number of encodings SecAgg summed; it must be in [min_survivors, max_clients], else
    the release would carry less noise than accounted (too few) or was not calibrated against wrap-around (too
    many). Raises `WrapAroundError` if a coordinate is outside the envelope (module docstring), unless
    `check_envelope` is False.
    """
    if isinstance(survivors, bool) or not isinstance(survivors, int | np.integer):
        raise TypeError(f"survivors must be an int, found {survivors!r}")
    if not params.min_survivors <= survivors <= params.max_clients:
        raise ValueError(f"survivors must be in [min_survivors={params.min_survivors}, max_clients="
                         f"{params.max_clients}], found {survivors}")
    ring = np.asarray(total)
    if ring.dtype != params.ring_dtype or ring.shape != (params.padded_dim,):
        raise ValueError(f"expected a {params.ring_dtype} vector of {params.padded_dim} ring elements, found "
                         f"{ring.dtype} of shape {ring.shape}")
    signed = centred(ring, params.ring_bits)
    if check_envelope:
        outside = np.abs(signed) >= params.envelope
        count = int(np.count_nonzero(outside))
        if count:
            max_abs = int(np.max(np.abs(signed)))
            raise WrapAroundError(
                f"{count} of {signed.size} coordinates of the decoded sum are outside the calibrated envelope "
                f"+-2^{params.ring_bits - 2} (largest |value| {max_abs}): probable modular wrap-around; the "
                f"aggregate is unusable (discard the round; its privacy cost is spent)", count=count, max_abs=max_abs)
    return rotation.unrotate(signed.astype(np.float64) / params.scale, params.rotation_seed, params.dim)


def noise_std(params: DistributedDpParams, survivors: int) -> float:
    """Per-coordinate standard deviation of the decoded sum's noise, float units: sqrt(|U| client_variance)/gamma."""
    return math.sqrt(survivors * params.client_variance) / params.scale


def error_bound(params: DistributedDpParams, survivors: int) -> float:
    """Deterministic L2 bound on the rounding error of a decoded sum: |U| sqrt(padded_dim) / gamma (float units).

    decode_sum(...) - sum x_i - noise term has L2 norm below this (plus float64 rounding, ~1e-15 relative).
    """
    return survivors * math.sqrt(params.padded_dim) / params.scale
