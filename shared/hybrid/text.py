"""Public text features: everything here depends only on the public catalog table, never on a history.

The catalog table E (`fedrec.shared.model.catalog_table`) is whitened once per process: centred, rotated to its
principal axes and each axis divided by the square root of its singular value, then L2-normalised. Whitening
spreads the MiniLM embeddings (which crowd into a narrow cone) so that a sum of a user's item vectors points at
what is specific to that user rather than at the catalog mean. A user's *profile* is the sum of the whitened
vectors of their items (computed on the device); its *code* is the unit vector of its first r coordinates (the
top-r principal axes), the low-dimensional user feature the cross release pairs with items.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TextFeatures:
    """The whitened item table Z (M, d) of one catalog table."""

    table: np.ndarray  # (M, d) float32, unit rows

    @property
    def dim(self) -> int:
        return int(self.table.shape[1])

    def profile(self, items: np.ndarray) -> np.ndarray:
        """A user's profile: the sum of their items' whitened vectors (d,)."""
        return self.table[np.asarray(items, dtype=np.int64)].astype(np.float64).sum(0)

    def code(self, items: np.ndarray, rank: int) -> np.ndarray:
        """The unit vector of the profile's first `rank` coordinates (principal axes, largest first)."""
        head = self.profile(items)[:rank]
        norm = float(np.linalg.norm(head))
        return head / norm if norm > 0 else head

    def scores(self, items: np.ndarray) -> np.ndarray:
        """Zero-shot text score of every item for a user: <profile, z_i> (M,)."""
        return self.table @ self.profile(items).astype(np.float32)


def whiten(table: np.ndarray, power: float = 0.5) -> np.ndarray:
    """Centre, rotate to principal axes, divide axis i by s_i^power, L2-normalise rows (float32)."""
    e = np.asarray(table, dtype=np.float64)
    centred = e - e.mean(0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    z = centred @ vt.T / np.maximum(s, 1e-12) ** power
    z /= np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
    return z.astype(np.float32)


_CACHE: dict[str, TextFeatures] = {}


def text_features(table: np.ndarray) -> TextFeatures:
    """The whitened features of a catalog table, computed once per process per table (SVD of M x d: ~1 s).

    Keyed by a digest of the table's bytes, so two equal tables share one entry and a changed one never reuses it.
    """
    arr = np.ascontiguousarray(table, dtype=np.float32)
    key = hashlib.sha256(arr.tobytes()).hexdigest()
    if key not in _CACHE:
        if len(_CACHE) >= 4:
            _CACHE.clear()
        _CACHE[key] = TextFeatures(whiten(arr))
    return _CACHE[key]
