"""Conditional randomized rounding: the L2 bound is never exceeded, the rounding is unbiased, failures are loud."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedrec.shared.privacy.distributed_dp import rounding

BETAS = [0.0, rounding.DEFAULT_BETA, 0.05, 0.9]


def test_l2_bound_formula() -> None:
    c, d = 10.0, 64
    assert rounding.l2_bound(c, d, 0.0) == c + 8.0
    beta = math.exp(-0.5)  # sqrt(2 ln(1/beta)) = 1
    assert rounding.l2_bound(c, d, beta) == pytest.approx(math.sqrt(c * c + d / 4 + (c + 4.0)))
    tiny_beta = 1e-100  # a large sqrt(2 ln(1/beta)) makes the c + sqrt(d) branch the smaller one
    assert rounding.l2_bound(0.1, 4, tiny_beta) == pytest.approx(2.1)
    assert rounding.l2_bound(0.1, 4, tiny_beta) < math.sqrt(0.01 + 1 + math.sqrt(2 * math.log(1e100)) * 1.1)
    assert rounding.l1_bound(3.0, 100) == 9.0
    assert rounding.l1_bound(300.0, 100) == 3000.0
    with pytest.raises(ValueError, match="beta"):
        rounding.l2_bound(1.0, 4, 1.0)


@settings(max_examples=80, deadline=None)
@given(z=hnp.arrays(np.float64, st.integers(1, 48), elements=st.floats(-50, 50)),
       slack=st.floats(1.0, 1.5), beta=st.sampled_from(BETAS), seed=st.integers(0, 2**32 - 1))
def test_rounded_norm_never_exceeds_the_bound(z: np.ndarray, slack: float, beta: float, seed: int) -> None:
    bound = rounding.l2_bound(float(np.linalg.norm(z)) * slack, z.size, beta)
    q, tries = rounding.conditional_round(z, bound, np.random.default_rng(seed))
    assert q.dtype == np.int64 and q.shape == z.shape and tries >= 1
    assert float(np.linalg.norm(q.astype(np.float64))) <= bound
    assert np.all((q - z > -1) & (q - z < 1))


@settings(max_examples=60, deadline=None)
@given(z=hnp.arrays(np.float64, st.integers(1, 24), elements=st.floats(-5, 5)),
       bound=st.floats(0.0, 20.0), seed=st.integers(0, 2**32 - 1))
def test_any_bound_is_met_or_refused(z: np.ndarray, bound: float, seed: int) -> None:
    """Even for a bound that may be infeasible: either a vector within it, or RoundingError; never a larger one."""
    try:
        q, _ = rounding.conditional_round(z, bound, np.random.default_rng(seed), max_tries=5)
    except rounding.RoundingError:
        return
    assert float(np.linalg.norm(q.astype(np.float64))) <= bound


def test_unconditional_rounding_is_unbiased() -> None:
    rng = np.random.default_rng(5)
    z = rng.uniform(-3, 3, size=16)
    qs = np.stack([rounding.conditional_round(z, rounding.l2_bound(np.linalg.norm(z), 16, 0.0), rng)[0]
                   for _ in range(8000)])
    se = np.sqrt((z - np.floor(z)) * (1 - (z - np.floor(z))) / 8000) + 1e-12
    assert np.all(np.abs(qs.mean(axis=0) - z) < 5 * se)


def _round_many(norm: float, clip: float, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    z = rng.normal(size=32)
    z *= norm / np.linalg.norm(z)
    bound = rounding.l2_bound(clip, 32, rounding.DEFAULT_BETA)
    return z, np.stack([rounding.conditional_round(z, bound, rng)[0] for _ in range(n)])


def test_conditional_rounding_is_unbiased_below_the_clip() -> None:
    """At gamma S >> sqrt(d) (the regime calibration picks) and a norm below the clip, the condition never bites."""
    z, qs = _round_many(900.0, 1000.0, 4000, 6)
    frac = z - np.floor(z)
    se = np.sqrt(frac * (1 - frac) / 4000) + 1e-12
    assert np.all(np.abs(qs.mean(axis=0) - z) < 5 * se)


def test_conditional_rounding_at_the_clip_shrinks_by_about_one_over_gamma_s() -> None:
    """At exactly the clip norm about 10% of tries are refused, and the accepted ones are shrunk towards 0 by a
    relative ~1e-4 = O(1 / (gamma S)) (documented; negligible at the calibrated gamma S ~ 1e5 - 1e6)."""
    z, qs = _round_many(1000.0, 1000.0, 4000, 7)
    shrink = float(qs.mean(axis=0) @ z / (z @ z))
    assert 1 - 1e-3 < shrink < 1.0


def test_too_many_tries_is_a_clear_error() -> None:
    z = np.full(4, 1.5)  # every rounding has norm >= 2
    with pytest.raises(rounding.RoundingError, match=r"all 7 tries"):
        rounding.conditional_round(z, 0.5, np.random.default_rng(0), max_tries=7)


def test_exactly_at_the_bound_is_conservatively_refused() -> None:
    """The float64 check never accepts a vector that might exceed the bound, so one exactly at it is refused."""
    assert rounding._fits(np.array([3, 4]), 5.0 * (1 + 1e-12))
    assert not rounding._fits(np.array([3, 4]), 5.0)


def test_bad_inputs() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="non-finite"):
        rounding.conditional_round(np.array([np.nan]), 1.0, rng)
    with pytest.raises(ValueError, match="2\\^52"):
        rounding.conditional_round(np.array([2.0**53]), 2.0**54, rng)
