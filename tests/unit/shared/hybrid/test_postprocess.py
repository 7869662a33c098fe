"""The server's post-processing of noisy sums: head selection, spectral denoising, EASE, ridge."""

from __future__ import annotations

import numpy as np

from fedrec.shared.hybrid.postprocess import cross_weights, ease, gram_from_upper, select_head, spiked_shrink


def test_head_is_the_largest_noisy_counts_sorted_by_index() -> None:
    assert select_head(np.array([1.0, 9.0, 3.0, 9.0, 0.5]), 3).tolist() == [1, 2, 3]


def test_gram_from_upper_is_symmetric_and_exact() -> None:
    x = np.array([1.0, 0.0, 1.0, 1.0])
    full = np.outer(x, x)
    assert np.array_equal(gram_from_upper(full[np.triu_indices(4)], 4), full)


def test_spiked_shrink_brings_a_noisy_low_rank_matrix_closer_to_the_signal() -> None:
    """Planted rank-2 signal + Wigner noise: the shrunk matrix is much closer to the signal than the noisy one."""
    rng = np.random.default_rng(0)
    h, sigma = 200, 1.0
    u = rng.normal(size=(h, 2))
    signal = u @ u.T * 2.0
    noise = np.triu(rng.normal(0, sigma, size=(h, h)))
    noisy = signal + noise + np.triu(noise, 1).T
    err_raw = np.linalg.norm(noisy - signal)
    err_shrunk = np.linalg.norm(spiked_shrink(noisy, sigma) - signal)
    assert err_shrunk < 0.3 * err_raw
    assert np.array_equal(spiked_shrink(noisy, 0.0), noisy)  # no noise: nothing to undo


def test_ease_matches_its_closed_form() -> None:
    rng = np.random.default_rng(1)
    x = (rng.random((50, 6)) < 0.4).astype(float)
    g, lam = x.T @ x, 3.0
    p = np.linalg.inv(g + lam * np.eye(6))
    want = np.eye(6) - p / np.diag(p)[None, :]
    np.fill_diagonal(want, 0.0)
    np.testing.assert_allclose(ease(g, lam), want, atol=1e-10)


def test_cross_weights_scale_the_noisy_sum_by_the_public_prior() -> None:
    p = np.ones((4, 3))
    np.testing.assert_allclose(cross_weights(p, population=100, lam=5.0), p / (100 / 4 + 5.0))
