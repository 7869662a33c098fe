"""Empirical privacy: an epsilon *measured* on canaries in the same training run, beside the claimed upper bound.

Pure functions (numpy and scipy only); `fedrec.server.empirical_audit` runs them on a simulation's canaries and the run
report carries the result (`empirical_audit`). Two methods:

**One-run lower bound** (Steinke, Nasr & Jagielski, "Privacy Auditing with One (1) Training Run", NeurIPS 2023,
arXiv:2305.08846). Take m canaries and include each one independently with probability 1/2 (S_i in {-1, +1}).
After training, score every canary; guess "in" (T_i = +1) for the k+ highest scores and "out" (T_i = -1) for the
k- lowest, abstain (T_i = 0) on the rest. With r = k+ + k- guesses of which v are correct, their main theorem
says: if training is epsilon-DP with respect to each canary (changing one S_i), then v is stochastically
dominated by a Binomial(r, q) with q = e^eps / (1 + e^eps), the accuracy of randomized response, so

    p(eps) = P[Binomial(r, q) >= v]                                                               (pure DP)

is a valid p-value for "the training is eps-DP". Their approximate-DP extension (the (eps, delta) theorem and
the p-value code listed in the paper) adds a delta term:

    p(eps, delta) = P[Bin(r, q) >= v] + 2 m delta * max_{i = 1..v} P[v > Bin(r, q) >= v - i] / i        (1)

The lower bound at confidence 1 - beta is the largest eps with p(eps, delta) <= beta (`epsilon_lower_bound`):
with probability at least 1 - beta over the canaries' coin flips, a mechanism that really is (eps', delta)-DP
yields a bound <= eps'. The guesses must not be tuned on the audited canaries' membership: k+ and k- are fixed
before training (`one_run_audit`), which is what fedrec does.

**One-shot estimate** (Andrew, Kairouz, Oh, Oprea, McMahan & Suriyakumar, "One-shot Empirical Privacy
Estimation for Federated Learning", ICLR 2024, arXiv:2302.03098). Canary clients send a fixed random unit
direction c_i as their update. The statistic is the cosine between c_i and the final model change. For a
direction the training never saw, the cosine with any fixed vector in d dimensions is ~ N(0, 1/d) (their
section 4: the closed-form null). Fit N(mu, sigma^2) to the cosines of the canaries that were inserted and take
the epsilon of the pair of Gaussians (N(0, 1/d), N(mu, sigma^2)) at delta (`gaussian_pair_epsilon`). This is an
*estimate* (exact for a Gaussian mechanism, approximate otherwise), not a confidence bound.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import special, stats

#: Confidence of every lower bound fedrec reports (beta = 0.05).
CONFIDENCE = 0.95


# ---------------------------------------------------------------------------------------------------------------
# Steinke, Nasr & Jagielski 2023: p-value and lower bound


def _check_counts(m: int, r: int, v: int) -> None:
    if not (isinstance(m, int | np.integer) and isinstance(r, int | np.integer) and isinstance(v, int | np.integer)):
        raise TypeError(f"m, r and v must be integers, found {m!r}, {r!r}, {v!r}")
    if not 0 <= v <= r <= m:
        raise ValueError(f"expected 0 <= correct v <= guesses r <= canaries m, found v={v}, r={r}, m={m}")


def one_run_p_value(*, m: int, r: int, v: int, epsilon: float, delta: float) -> float:
    """Equation (1): the probability of at least `v` correct guesses out of `r` if training is (eps, delta)-DP.

    `m` canaries, each included with probability 1/2; `r` guesses (abstentions excluded), `v` of them correct.
    Capped at 1.
    """
    _check_counts(m, r, v)
    if epsilon < 0 or not 0 <= delta <= 1:
        raise ValueError(f"expected epsilon >= 0 and 0 <= delta <= 1, found epsilon={epsilon}, delta={delta}")
    q = float(special.expit(epsilon))  # e^eps / (1 + e^eps): the accuracy of eps-DP randomized response
    tail = float(stats.binom.sf(v - 1, r, q))  # P[Bin(r, q) >= v]
    if delta == 0 or v == 0:
        return min(1.0, tail)
    # below[i-1] = P[v > Bin(r, q) >= v - i] for i = 1..v
    below = np.cumsum(stats.binom.pmf(np.arange(v - 1, -1, -1), r, q))
    alpha = float(np.max(below / np.arange(1, v + 1)))
    return min(1.0, tail + 2.0 * m * delta * alpha)


def epsilon_lower_bound(*, m: int, r: int, v: int, delta: float, confidence: float = CONFIDENCE,
                        tolerance: float = 1e-10) -> float:
    """The largest epsilon whose p-value (equation (1)) is <= 1 - `confidence`; 0 if even epsilon = 0 is not.

    Rejecting (eps, delta)-DP for one eps rejects it for every smaller eps too (eps-DP implies eps'-DP for
    eps' > eps), so any eps with p(eps) <= beta is a valid lower bound; bisection keeps the low end of the
    bracket, within `tolerance`. Zero correct guesses give 0; all r correct with delta = 0 give the analytic
    value logit(beta^(1/r)) (solve q^r = beta for q).
    """
    _check_counts(m, r, v)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), found {confidence}")
    beta = 1.0 - confidence

    def rejected(eps: float) -> bool:
        return one_run_p_value(m=m, r=r, v=v, epsilon=eps, delta=delta) <= beta

    if not rejected(0.0):
        return 0.0
    # p -> P[Bin(r, 1) >= v] = 1 as eps grows, so the bracket search ends
    return _flip_point(rejected, tolerance=tolerance)[0]


def _flip_point(still: Callable[[float], bool], *, tolerance: float, cap: float = math.inf) -> tuple[float, float]:
    """(lo, hi) within `tolerance` with still(lo) and not still(hi), for a predicate true at 0 that turns false
    once as eps grows: doubling from 1 to bracket, then bisection. hi is inf if still(cap) holds."""
    lo, hi = 0.0, 1.0
    while still(hi):
        lo, hi = hi, 2.0 * hi
        if hi > cap:
            return lo, math.inf
    while hi - lo > tolerance * max(1.0, hi):
        mid = 0.5 * (lo + hi)
        if still(mid):
            lo = mid
        else:
            hi = mid
    return lo, hi


def one_run_guesses(scores: Sequence[float] | np.ndarray, *, k_plus: int, k_minus: int) -> np.ndarray:
    """T in {-1, 0, +1}^m: +1 for the `k_plus` highest scores, -1 for the `k_minus` lowest, 0 elsewhere.

    Ties are broken by canary index (a stable sort), which is independent of the membership coin flips.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or not np.all(np.isfinite(s)):
        raise ValueError(f"scores must be a 1-D array of finite numbers, found shape {s.shape}")
    if k_plus < 0 or k_minus < 0 or k_plus + k_minus > s.size:
        raise ValueError(f"need k+ >= 0, k- >= 0 and k+ + k- <= m = {s.size}, found k+={k_plus}, k-={k_minus}")
    order = np.argsort(s, kind="stable")  # ascending
    guesses = np.zeros(s.size, dtype=np.int64)
    guesses[order[:k_minus]] = -1
    if k_plus:
        guesses[order[s.size - k_plus:]] = 1
    return guesses


@dataclass(frozen=True, kw_only=True)
class OneRunAudit:
    """The outcome of a one-run audit: counts, the settings they were judged at, and the bound."""

    canaries: int  # m
    included: int  # how many canaries were in (about m / 2)
    guesses_in: int  # k+
    guesses_out: int  # k-
    correct: int  # v
    delta: float
    confidence: float
    epsilon_lower_bound: float

    @property
    def guesses(self) -> int:  # r
        return self.guesses_in + self.guesses_out


def guess_counts(m: int, fraction: float) -> tuple[int, int]:
    """(k+, k-) = (round(f m), round(f m)), fixed before training; at least one guess of each kind if m >= 2."""
    if not 0 < fraction <= 0.5:
        raise ValueError(f"guess fraction must be in (0, 0.5], found {fraction}")
    k = max(1, int(round(fraction * m))) if m >= 2 else 0
    return k, k


def one_run_audit(scores: Sequence[float] | np.ndarray, included: Sequence[bool] | np.ndarray, *, k_plus: int,
                  k_minus: int, delta: float, confidence: float = CONFIDENCE) -> OneRunAudit:
    """Guess from `scores` alone (higher = more likely in), *then* count against `included`, then bound."""
    guesses = one_run_guesses(scores, k_plus=k_plus, k_minus=k_minus)
    truth = np.where(np.asarray(included, dtype=bool), 1, -1)
    if truth.shape != guesses.shape:
        raise ValueError(f"{guesses.size} scores but {truth.size} membership bits")
    correct = int(np.sum((guesses != 0) & (guesses == truth)))
    m, r = int(guesses.size), int(k_plus + k_minus)
    return OneRunAudit(canaries=m, included=int(np.sum(truth == 1)), guesses_in=int(k_plus),
                       guesses_out=int(k_minus), correct=correct, delta=float(delta), confidence=float(confidence),
                       epsilon_lower_bound=epsilon_lower_bound(m=m, r=r, v=correct, delta=delta,
                                                               confidence=confidence))


# ---------------------------------------------------------------------------------------------------------------
# Andrew et al. 2024: epsilon of a pair of Gaussians, the one-shot estimate


def _log_mass(lo: float, hi: float, mu: float, sigma: float) -> float:
    """log P[lo < X < hi] for X ~ N(mu, sigma^2), accurate in both tails (lo may be -inf, hi +inf)."""
    a, b = (lo - mu) / sigma, (hi - mu) / sigma
    if a >= b:
        return -math.inf
    if b == math.inf:
        return float(stats.norm.logsf(a))
    if a == -math.inf:
        return float(stats.norm.logcdf(b))
    if a > 0:  # both in the upper tail: difference of survival functions
        hi_sf, lo_sf = stats.norm.logsf(b), stats.norm.logsf(a)
        return float(lo_sf + np.log1p(-np.exp(hi_sf - lo_sf)))
    lo_cdf, hi_cdf = stats.norm.logcdf(a), stats.norm.logcdf(b)
    return float(hi_cdf + np.log1p(-np.exp(lo_cdf - hi_cdf)))


def _log_hockey_stick(p: tuple[float, float], q: tuple[float, float], epsilon: float) -> float:
    """log delta_P||Q(eps) = log sup_S (P(S) - e^eps Q(S)) for P = N(p), Q = N(q) given as (mean, std).

    The sup is attained on S = {x : log p(x)/q(x) > eps}. With P = N(m1, s1^2) and Q = N(m0, s0^2),
    log p/q = a x^2 + b x + c with a = 1/(2 s0^2) - 1/(2 s1^2), b = m1/s1^2 - m0/s0^2,
    c = m0^2/(2 s0^2) - m1^2/(2 s1^2) + log(s0/s1); S is a half-line (a = 0), two tails (a > 0) or an interval.
    """
    (m1, s1), (m0, s0) = p, q
    a = 0.5 / s0**2 - 0.5 / s1**2
    b = m1 / s1**2 - m0 / s0**2
    c = 0.5 * m0**2 / s0**2 - 0.5 * m1**2 / s1**2 + math.log(s0 / s1) - epsilon  # region: a x^2 + b x + c > 0
    if abs(a) <= 1e-12 * max(1 / s0**2, 1 / s1**2):
        if b == 0:
            return -math.inf  # P = Q up to the constant: c <= 0 for eps >= 0, the region is empty
        edge = -c / b
        region = [(edge, math.inf)] if b > 0 else [(-math.inf, edge)]
    else:
        disc = b * b - 4 * a * c
        if disc <= 0:
            return -math.inf  # the region is empty (a < 0) or everything (a > 0, then delta = 1 - e^eps <= 0)
        r1, r2 = sorted(((-b - math.sqrt(disc)) / (2 * a), (-b + math.sqrt(disc)) / (2 * a)))
        region = [(-math.inf, r1), (r2, math.inf)] if a > 0 else [(r1, r2)]
    log_p = special.logsumexp([_log_mass(lo, hi, m1, s1) for lo, hi in region])
    log_q = special.logsumexp([_log_mass(lo, hi, m0, s0) for lo, hi in region])
    gap = epsilon + log_q - log_p
    if not math.isfinite(log_p) or gap >= 0:
        return -math.inf
    return float(log_p + math.log1p(-math.exp(gap)))


def gaussian_pair_epsilon(mu0: float, sigma0: float, mu1: float, sigma1: float, *, delta: float,
                          tolerance: float = 1e-10) -> float:
    """The smallest eps >= 0 such that N(mu0, sigma0^2) and N(mu1, sigma1^2) are (eps, delta)-indistinguishable.

    Both hockey-stick divergences (either order) must be <= delta. For equal variances this is the analytic
    Gaussian mechanism (Balle & Wang 2018) with sensitivity / sigma = |mu1 - mu0| / sigma.
    """
    if sigma0 <= 0 or sigma1 <= 0 or not 0 < delta < 1:
        raise ValueError(f"expected sigmas > 0 and 0 < delta < 1, found {sigma0}, {sigma1}, {delta}")
    log_delta = math.log(delta)
    a, b = (mu0, sigma0), (mu1, sigma1)

    def ok(eps: float) -> bool:
        return max(_log_hockey_stick(a, b, eps), _log_hockey_stick(b, a, eps)) <= log_delta

    if ok(0.0):
        return 0.0
    return _flip_point(lambda eps: not ok(eps), tolerance=tolerance, cap=1e6)[1]


@dataclass(frozen=True, kw_only=True)
class CanaryCosineEstimate:
    """Andrew et al.'s one-shot estimate from the cosines of inserted canary directions."""

    inserted: int  # canaries whose direction was sent (the fit uses these)
    dimension: int  # d: number of model parameters
    mean: float  # mu of the inserted canaries' cosines
    std: float  # sigma of the inserted canaries' cosines
    null_std: float  # 1 / sqrt(d), the closed-form null
    delta: float
    epsilon: float  # the estimate (inf if the fit separates the two Gaussians beyond any finite eps)


def canary_cosine_estimate(inserted_cosines: Sequence[float] | np.ndarray, *, dimension: int,
                           delta: float) -> CanaryCosineEstimate | None:
    """Fit N(mu, sigma^2) to the inserted canaries' cosines and compare with the null N(0, 1/d); None if < 2."""
    x = np.asarray(inserted_cosines, dtype=np.float64)
    if x.size < 2:
        return None
    if dimension < 1:
        raise ValueError(f"dimension must be >= 1, found {dimension}")
    mu, sigma = float(np.mean(x)), float(np.std(x, ddof=1))
    null = dimension ** -0.5
    sigma = max(sigma, 1e-6 * null)  # identical cosines (a degenerate fit) would give sigma = 0
    eps = gaussian_pair_epsilon(0.0, null, mu, sigma, delta=delta)
    return CanaryCosineEstimate(inserted=int(x.size), dimension=int(dimension), mean=mu, std=sigma, null_std=null,
                                delta=float(delta), epsilon=eps)
