"""Skellam and discrete Gaussian samplers against their exact PMFs (chi-square), with negative controls that show
the same test rejects a sampler whose variance is 5% off."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
from scipy import stats

from fedrec.shared.privacy.distributed_dp import samplers

N = 200_000
LogPmf = Callable[[np.ndarray], np.ndarray]


def chi_square_p(samples: np.ndarray, log_pmf: LogPmf) -> float:
    """p-value of Pearson's chi-square test of integer samples against a PMF; bins with expected count < 20 are
    pooled into the two tails."""
    lo, hi = int(samples.min()) - 1, int(samples.max()) + 1
    support = np.arange(lo, hi + 1)
    probs = np.exp(log_pmf(support))
    expected = probs * samples.size
    observed = np.bincount(samples - lo, minlength=support.size).astype(np.float64)
    keep = expected >= 20
    first, last = np.argmax(keep), keep.size - 1 - np.argmax(keep[::-1])
    inner_obs, inner_exp = observed[first:last + 1], expected[first:last + 1]
    # tails: everything below / above the inner range, with the exact tail mass (not just the sampled range)
    total = samples.size
    tail_lo_exp = total * float(np.exp(log_pmf(np.arange(lo - 2000, lo + first))).sum())
    tail_hi_exp = total * float(np.exp(log_pmf(np.arange(lo + last + 1, hi + 2000))).sum())
    obs = np.concatenate([[observed[:first].sum()], inner_obs, [observed[last + 1:].sum()]])
    exp = np.concatenate([[tail_lo_exp], inner_exp, [tail_hi_exp]])
    exp *= obs.sum() / exp.sum()
    mask = exp > 0
    stat = float(np.sum((obs[mask] - exp[mask]) ** 2 / exp[mask]))
    return float(stats.chi2.sf(stat, df=int(mask.sum()) - 1))


def skellam_logpmf(variance: float) -> LogPmf:
    return lambda k: stats.skellam.logpmf(k, variance / 2, variance / 2)


def discrete_gaussian_logpmf(sigma2: float) -> LogPmf:
    """Normalised exp(-x^2 / (2 sigma2)), computed here independently of the module's helper."""
    half = int(60 * math.sqrt(sigma2)) + 60
    support = np.arange(-half, half + 1, dtype=np.float64)
    log_z = float(np.logaddexp.reduce(-support**2 / (2 * sigma2)))
    return lambda k: -np.asarray(k, dtype=np.float64) ** 2 / (2 * sigma2) - log_z


@pytest.mark.parametrize("variance", [0.6, 5.0, 80.0])
def test_skellam_matches_scipy_pmf_and_moments(variance: float) -> None:
    x = samplers.skellam(np.random.default_rng(11), variance, N)
    assert x.dtype == np.int64
    assert chi_square_p(x, skellam_logpmf(variance)) > 1e-4
    se_mean = math.sqrt(variance / N)
    assert abs(x.mean()) < 5 * se_mean
    kurt = 3 + 1 / variance  # Skellam excess kurtosis is 1/V
    se_var = variance * math.sqrt((kurt - 1) / N)
    assert abs(x.var() - variance) < 5 * se_var  # 5 SE is < 2% here: a 5% variance error fails


@pytest.mark.parametrize("variance", [0.6, 5.0, 80.0])
def test_skellam_chi_square_detects_a_five_percent_variance_error(variance: float) -> None:
    x = samplers.skellam(np.random.default_rng(12), variance * 1.05, N)
    assert chi_square_p(x, skellam_logpmf(variance)) < 1e-6


def test_sum_of_skellam_shares_is_exactly_skellam() -> None:
    """Closure under summation: t shares of Sk(V) are Sk(tV) (what makes the survivors' noise exact)."""
    rng = np.random.default_rng(13)
    t, v = 7, 3.0
    total = sum(samplers.skellam(rng, v, N) for _ in range(t))
    assert chi_square_p(total, skellam_logpmf(t * v)) > 1e-4
    assert chi_square_p(total, skellam_logpmf(t * v * 1.05)) < 1e-6


@pytest.mark.parametrize("sigma2", [0.5, 4.0, 50.0])
def test_discrete_gaussian_matches_reference_pmf_and_moments(sigma2: float) -> None:
    x = samplers.discrete_gaussian(np.random.default_rng(21), sigma2, N)
    assert x.dtype == np.int64 and x.size == N
    log_pmf = discrete_gaussian_logpmf(sigma2)
    assert chi_square_p(x, log_pmf) > 1e-4
    support = np.arange(-2000, 2001)
    p = np.exp(log_pmf(support))
    exact_var = float(np.sum(p * support**2))
    assert abs(x.mean()) < 5 * math.sqrt(exact_var / N)
    assert abs(x.var() - exact_var) < 5 * exact_var * math.sqrt(2.5 / N)


@pytest.mark.parametrize("sigma2", [0.5, 4.0, 50.0])
def test_discrete_gaussian_chi_square_detects_a_five_percent_variance_error(sigma2: float) -> None:
    x = samplers.discrete_gaussian(np.random.default_rng(22), sigma2 * 1.05, N)
    assert chi_square_p(x, discrete_gaussian_logpmf(sigma2)) < 1e-6


def test_discrete_gaussian_module_reference_pmf_agrees() -> None:
    k = np.arange(-30, 31)
    np.testing.assert_allclose(samplers.discrete_gaussian_logpmf(k, 7.0), discrete_gaussian_logpmf(7.0)(k),
                               rtol=1e-12, atol=1e-12)


def test_large_variances_keep_their_variance() -> None:
    rng = np.random.default_rng(31)
    for v in (1e6, samplers.MAX_VARIANCE):
        for x in (samplers.skellam(rng, v, 50_000), samplers.discrete_gaussian(rng, v, 50_000)):
            assert abs(x.var() / v - 1) < 5 * math.sqrt(2 / 50_000)


def test_zero_variance_is_zero_and_bad_variances_are_refused() -> None:
    rng = np.random.default_rng(0)
    assert not samplers.skellam(rng, 0.0, 5).any()
    assert not samplers.discrete_gaussian(rng, 0, 5).any()
    for bad in (-1.0, math.inf, math.nan, samplers.MAX_VARIANCE * 2):
        with pytest.raises(ValueError, match="variance|sigma2"):
            samplers.skellam(rng, bad, 3)
        with pytest.raises(ValueError, match="sigma2"):
            samplers.discrete_gaussian(rng, bad, 3)
    with pytest.raises(TypeError):
        samplers.skellam(rng, True, 3)


def test_secure_generators_are_independent() -> None:
    a, b = samplers.secure_generator(), samplers.secure_generator()
    assert not np.array_equal(a.integers(0, 2**63, 8), b.integers(0, 2**63, 8))
