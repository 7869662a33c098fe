"""What the server computes from a release's noisy sum: post-processing only, so it costs no privacy.

- `select_head`: the h items with the largest *noisy* popularity counts (a later release is indexed by them).
- `gram_from_upper` + `spiked_shrink`: the symmetric co-occurrence matrix and its spectral denoising. A noisy Gram
  is G + W with W a Wigner matrix of entry std sigma; its eigenvalues above the bulk edge 2 sigma sqrt(h) carry
  signal, and the spiked-Wigner inverse theta = (mu + sqrt(mu^2 - 4 sigma^2 h)) / 2 undoes the bias the noise adds
  to them (Benaych-Georges & Nadakuditi 2011); the rest of the spectrum is noise and is dropped.
- `ease`: EASE (Steck 2019), the closed-form item-item model B = I - P diag(1/diag P), P = (G + lambda I)^-1.
- `cross_weights`: the ridge map from a user's text code to items, W = (A + lambda I)^-1 P, with A = (N / r) I the
  public isotropic prior of the codes' second moment (unit codes in r dimensions).
"""

from __future__ import annotations

import numpy as np
import scipy.linalg as sla


def select_head(noisy_counts: np.ndarray, h: int) -> np.ndarray:
    """The h items with the largest noisy counts, sorted by catalog index (ties: the lower index)."""
    order = np.lexsort((np.arange(len(noisy_counts)), -np.asarray(noisy_counts, dtype=np.float64)))
    return np.sort(order[: min(h, len(order))])


def gram_from_upper(upper: np.ndarray, h: int) -> np.ndarray:
    """The symmetric (h, h) matrix whose upper triangle (diagonal included, row-major) is `upper`."""
    g = np.zeros((h, h), dtype=np.float64)
    g[np.triu_indices(h)] = upper
    return g + np.triu(g, 1).T


def spiked_shrink(noisy: np.ndarray, sigma: float, edge: float = 1.0) -> np.ndarray:
    """Denoise a symmetric matrix observed with i.i.d. N(0, sigma^2) noise on its upper triangle.

    Eigenvalues above `edge` times the bulk edge 2 sigma sqrt(h) are kept (and un-biased); `edge` < 1 keeps a few
    weak directions just inside the edge, which the validation artist preferred on Last.fm-2K.
    """
    if sigma <= 0:
        return noisy
    h = noisy.shape[0]
    w, v = np.linalg.eigh(noisy)
    keep = w > edge * 2.0 * sigma * np.sqrt(h)
    theta = 0.5 * (w[keep] + np.sqrt(np.maximum(w[keep] ** 2 - 4.0 * sigma**2 * h, 0.0)))
    return (v[:, keep] * theta) @ v[:, keep].T


def ease(gram: np.ndarray, lam: float) -> np.ndarray:
    """EASE's item-item weights (h, h), zero diagonal, from a (denoised) Gram matrix."""
    h = gram.shape[0]
    p = sla.inv(gram + lam * np.eye(h), check_finite=False)
    p = 0.5 * (p + p.T)
    b = -p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    return b


def cross_weights(noisy: np.ndarray, population: int, lam: float) -> np.ndarray:
    """Ridge weights (r, h) from the noisy cross sum P = sum_u a_u x_u^T and the public prior A = (N / r) I."""
    r = noisy.shape[0]
    return np.asarray(noisy, dtype=np.float64) / (population / r + lam)
