"""Conditional randomized rounding to the integer grid, with a *guaranteed* L2 bound on what is sent.

Why randomized: rounding each coordinate of z up with probability frac(z_i) (down otherwise) is unbiased, E[q] = z,
so the rounding error averages out over clients and rounds instead of adding a bias (deterministic rounding may
bias every client the same way).

Why conditional: the DP guarantee needs a bound Delta_2 on ||q||_2 of *every* client's integer vector, and plain
randomized rounding can only promise ||q|| <= ||z|| + sqrt(d) (each coordinate moves by less than 1). Kairouz,
Liu & Steinke 2021 (Theorem 1 / Section 4.1, "conditional randomized rounding") show that with probability at
least 1 - beta a randomized rounding of z with ||z|| <= c satisfies

    ||q||_2^2 <= c^2 + d/4 + sqrt(2 ln(1/beta)) * (c + sqrt(d)/2),

so one rounds again until it does. The resulting bound is

    Delta_2 = min( c + sqrt(d),  sqrt(c^2 + d/4 + sqrt(2 ln(1/beta)) (c + sqrt(d)/2)) )       (beta > 0)
    Delta_2 = c + sqrt(d)                                                                    (beta = 0)

exactly as TFF computes it (`inflated_l2_norm_bound` in `tensorflow_federated/python/aggregators/discretization.py`,
`rounded_l2_norm_bound` in google-research/federated `distributed_dp/accounting_utils.py`). TFF's recommended
beta = exp(-1/2) (from Kairouz et al.) is the default: each try then succeeds with probability at least 0.39. With
beta = 0 the first try always satisfies the (looser) bound. `conditional_round` *enforces* the bound: it never
returns a vector whose norm exceeds it, and raises `RoundingError` after `max_tries` failures rather than send one.

The check is on integers, so float error in the rotation cannot break it; the sum of squares is computed in
float64 with a rigorous relative error margin (see `_fits`).

L1: for an integer vector ||q||_1 <= sqrt(d) ||q||_2 (Cauchy-Schwarz) and ||q||_1 <= ||q||_2^2 (|q_i| <= q_i^2), so
Delta_1 = min(sqrt(d) Delta_2, Delta_2^2) (TFF's `scaled_l1` in `distributed_dp.py`).
"""

from __future__ import annotations

import math

import numpy as np

#: Kairouz et al. 2021 / TFF's recommended conditional rounding parameter.
DEFAULT_BETA = math.exp(-0.5)
DEFAULT_MAX_TRIES = 1000
_U = 2.0**-53  # unit roundoff of float64


class RoundingError(RuntimeError):
    """Conditional randomized rounding did not meet its norm bound within `max_tries` tries."""


def _check_beta(beta: float) -> None:
    if isinstance(beta, bool) or not isinstance(beta, int | float) or not (0 <= beta < 1):
        raise ValueError(f"beta must be a number in [0, 1), found {beta!r}")


def l2_bound(scaled_norm: float, dim: int, beta: float = DEFAULT_BETA) -> float:
    """Delta_2: the L2 bound on a conditionally rounded vector of dimension `dim` whose norm before rounding is at
    most `scaled_norm` (= gamma S in integer units). See the module docstring for the formula and its source."""
    _check_beta(beta)
    if not (math.isfinite(scaled_norm) and scaled_norm >= 0):
        raise ValueError(f"scaled_norm must be finite and >= 0, found {scaled_norm!r}")
    if dim < 1:
        raise ValueError(f"dim must be >= 1, found {dim}")
    bound_1 = scaled_norm + math.sqrt(dim)
    if beta == 0:
        return bound_1
    sq = scaled_norm**2 + 0.25 * dim + math.sqrt(2.0 * math.log(1.0 / beta)) * (scaled_norm + 0.5 * math.sqrt(dim))
    return min(bound_1, math.sqrt(sq))


def l1_bound(l2: float, dim: int) -> float:
    """Delta_1 for integer vectors with ||q||_2 <= l2 in dimension dim: min(sqrt(dim) * l2, l2^2)."""
    return min(math.sqrt(dim) * l2, l2 * l2)


def _fits(q: np.ndarray, bound: float) -> bool:
    """||q||_2 <= bound, decided conservatively.

    Each q_i^2 is rounded with relative error <= u and the float64 sum of d non-negative terms has relative error
    <= (d - 1) u, so the computed sum s satisfies true <= s (1 + (d + 1) u) (to first order; d u < 2^-28 here). We
    accept only if s (1 + (d + 2) u) <= bound^2, computed as s <= bound^2 / (1 + (d + 2) u): never a false accept.
    """
    qf = q.astype(np.float64)
    s = float(np.dot(qf, qf))
    return s * (1.0 + (q.size + 2) * _U) <= bound * bound * (1.0 - 4 * _U)


def conditional_round(z: np.ndarray, bound: float, rng: np.random.Generator, *,
                      max_tries: int = DEFAULT_MAX_TRIES) -> tuple[np.ndarray, int]:
    """Round each z_i up with probability frac(z_i), down otherwise; repeat until ||q||_2 <= bound.

    Returns (q as int64, number of tries). Raises `RoundingError` if `max_tries` tries all exceed the bound (with
    `bound` from `l2_bound` and ||z|| within its `scaled_norm`, that has probability at most beta^max_tries).
    """
    v = np.asarray(z, dtype=np.float64).ravel()
    if not np.all(np.isfinite(v)):
        raise ValueError("cannot round a vector with non-finite values")
    if np.max(np.abs(v), initial=0.0) >= 2.0**52:
        raise ValueError("values of magnitude >= 2^52 cannot be rounded exactly in float64")
    floor = np.floor(v)
    frac = v - floor
    base = floor.astype(np.int64)
    for tries in range(1, max_tries + 1):
        q = base + (rng.random(v.size) < frac)
        if _fits(q, bound):
            return q, tries
    raise RoundingError(
        f"conditional randomized rounding exceeded the L2 bound {bound:.6g} in all {max_tries} tries (input norm "
        f"{float(np.linalg.norm(v)):.6g}, dimension {v.size}); the input is probably larger than the clip norm "
        f"the bound was computed for, or beta is too small for it")
