"""The empirical epsilon lower bound (Steinke, Nasr & Jagielski 2023) and the one-shot estimate (Andrew et al. 2024),
checked against values derived by hand."""

from __future__ import annotations

import math

import dp_accounting
import numpy as np
import pytest

from fedrec.shared.privacy.empirical import (
    canary_cosine_estimate,
    epsilon_lower_bound,
    gaussian_pair_epsilon,
    guess_counts,
    one_run_audit,
    one_run_guesses,
    one_run_p_value,
)


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def test_zero_correct_guesses_give_zero() -> None:
    """No correct guess is no evidence against any epsilon: the bound is 0, with or without delta."""
    assert epsilon_lower_bound(m=100, r=40, v=0, delta=0) == 0.0
    assert epsilon_lower_bound(m=100, r=40, v=0, delta=1e-5) == 0.0
    assert epsilon_lower_bound(m=10, r=0, v=0, delta=1e-5) == 0.0  # no guesses at all


@pytest.mark.parametrize(("r", "hand"), [(10, 1.0518732), (20, 1.8227156), (100, 3.4929654)])
def test_all_correct_without_delta_is_the_analytic_value(r: int, hand: float) -> None:
    """v = r, delta = 0: P[Bin(r, q) >= r] = q^r = beta, so eps = logit(beta^(1/r)) (values worked out by hand:
    r = 10: 0.05^0.1 = 0.741134, logit = ln(0.741134 / 0.258866) = 1.051873)."""
    # Execute
    bound = epsilon_lower_bound(m=r, r=r, v=r, delta=0, confidence=0.95)
    # Assert
    assert bound == pytest.approx(logit(0.05 ** (1 / r)), abs=1e-8)
    assert bound == pytest.approx(hand, abs=1e-6)


def test_too_few_guesses_cannot_show_anything() -> None:
    """Four correct guesses out of four: 0.5^4 = 0.0625 > 0.05 even at eps = 0, so the bound is 0."""
    assert epsilon_lower_bound(m=4, r=4, v=4, delta=0) == 0.0
    assert epsilon_lower_bound(m=5, r=5, v=5, delta=0) == pytest.approx(logit(0.05 ** 0.2), abs=1e-8)


def test_monotone_in_correct_guesses() -> None:
    """More correct guesses never lower the bound; fewer never raise it."""
    bounds = [epsilon_lower_bound(m=200, r=60, v=v, delta=1e-5) for v in range(61)]
    assert all(a <= b for a, b in zip(bounds, bounds[1:], strict=False))
    assert bounds[30] == 0.0 and bounds[60] > 2.0  # half right is chance; all right is evidence


def test_p_value_delta_term_matches_hand_computation() -> None:
    """m = r = v = 3, eps = ln 3 (q = 3/4): P[Bin >= 3] = 27/64; the delta term's alpha is max over i of
    P[3 > Bin >= 3 - i] / i = max(27/64, 36/64 / 2, 37/64 / 3) = 27/64, so p = 27/64 (1 + 2 * 3 * 0.01) = 0.4471875."""
    assert one_run_p_value(m=3, r=3, v=3, epsilon=math.log(3), delta=0.0) == pytest.approx(27 / 64)
    assert one_run_p_value(m=3, r=3, v=3, epsilon=math.log(3), delta=0.01) == pytest.approx(0.4471875)
    assert one_run_p_value(m=3, r=3, v=3, epsilon=math.log(3), delta=0.5) == 1.0  # capped


def test_delta_lowers_the_bound_and_the_bound_is_the_root() -> None:
    """delta > 0 can only weaken the evidence; the bound sits where the p-value crosses 1 - confidence."""
    # Execute
    pure = epsilon_lower_bound(m=1000, r=100, v=100, delta=0)
    approx = epsilon_lower_bound(m=1000, r=100, v=100, delta=1e-5)
    big = epsilon_lower_bound(m=1000, r=100, v=100, delta=1e-4)
    # Assert
    assert pure > approx > big > 0
    assert one_run_p_value(m=1000, r=100, v=100, epsilon=approx, delta=1e-5) == pytest.approx(0.05, abs=1e-6)
    assert one_run_p_value(m=1000, r=100, v=100, epsilon=approx + 1e-3, delta=1e-5) > 0.05


def test_higher_confidence_gives_a_lower_bound() -> None:
    assert (epsilon_lower_bound(m=100, r=50, v=45, delta=1e-5, confidence=0.99)
            < epsilon_lower_bound(m=100, r=50, v=45, delta=1e-5, confidence=0.95))


@pytest.mark.parametrize(("kwargs", "pattern"), [
    ({"m": 10, "r": 11, "v": 5}, r"r <= canaries m"),
    ({"m": 10, "r": 5, "v": 6}, r"0 <= correct v <= guesses r"),
    ({"m": 10, "r": 5, "v": 2.0}, r"must be integers"),
])
def test_bad_counts_are_rejected(kwargs, pattern) -> None:
    with pytest.raises((ValueError, TypeError), match=pattern):
        epsilon_lower_bound(delta=0, **kwargs)


def test_guesses_top_in_bottom_out_ties_by_index() -> None:
    """+1 for the k+ highest scores, -1 for the k- lowest, 0 elsewhere; equal scores ordered by canary index."""
    guesses = one_run_guesses([0.5, 3.0, -1.0, 0.5, 2.0, 0.5], k_plus=2, k_minus=2)
    assert guesses.tolist() == [-1, 1, -1, 0, 1, 0]
    assert guess_counts(40, 0.25) == (10, 10) and guess_counts(3, 0.1) == (1, 1) and guess_counts(1, 0.5) == (0, 0)


def test_audit_counts_guesses_against_membership() -> None:
    """Perfectly separated scores: every guess is right; shuffled membership: about half."""
    # Prepare
    rng = np.random.default_rng(0)
    included = rng.random(400) < 0.5
    separated = np.where(included, 1.0, 0.0) + rng.normal(0, 0.1, 400)
    # Execute
    strong = one_run_audit(separated, included, k_plus=50, k_minus=50, delta=1e-5)
    null = one_run_audit(rng.normal(size=400), included, k_plus=50, k_minus=50, delta=1e-5)
    # Assert
    assert strong.correct == strong.guesses == 100 and strong.included == int(included.sum())
    assert strong.epsilon_lower_bound == pytest.approx(epsilon_lower_bound(m=400, r=100, v=100, delta=1e-5))
    assert 30 <= null.correct <= 70 and null.epsilon_lower_bound == 0.0


@pytest.mark.parametrize("mu", [0.5, 1.0, 2.0, 4.0])
def test_equal_variance_gaussians_are_the_gaussian_mechanism(mu: float) -> None:
    """N(0, 1) vs N(mu, 1) is the Gaussian mechanism with sensitivity / sigma = mu: dp-accounting's analytic value."""
    assert gaussian_pair_epsilon(0.0, 1.0, mu, 1.0, delta=1e-5) == pytest.approx(
        dp_accounting.get_epsilon_gaussian(1.0 / mu, 1e-5), rel=1e-6)


def test_identical_gaussians_have_zero_epsilon_and_unequal_variances_do_not() -> None:
    assert gaussian_pair_epsilon(0.0, 1.0, 0.0, 1.0, delta=1e-5) == 0.0
    # N(0, 1) vs N(0, 0.5^2): the likelihood ratio is unbounded in the tails, so epsilon at delta is large
    assert gaussian_pair_epsilon(0.0, 1.0, 0.0, 0.5, delta=1e-5) > 5.0


def test_cosine_estimate_near_zero_on_null_and_positive_on_signal() -> None:
    """Cosines drawn from the null N(0, 1/d) give an estimate near 0; shifted ones a clearly positive estimate."""
    # Prepare
    rng = np.random.default_rng(1)
    d = 100_000
    null = rng.normal(0.0, d ** -0.5, 1000)
    shifted = rng.normal(3 * d ** -0.5, d ** -0.5, 1000)
    # Execute
    e_null = canary_cosine_estimate(null, dimension=d, delta=1e-5)
    e_signal = canary_cosine_estimate(shifted, dimension=d, delta=1e-5)
    # Assert
    assert e_null is not None and e_null.epsilon < 0.5
    assert e_signal is not None and e_signal.epsilon > 8.0 and e_signal.inserted == 1000
    assert canary_cosine_estimate([0.1], dimension=d, delta=1e-5) is None  # one canary: nothing to fit
