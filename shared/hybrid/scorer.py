"""The device's hybrid score over the whole catalog: its own history combined with what the server released.

score(i) = sum over components c of w_c * s_c(i) / max_j |s_c(j)|

- `text`:  the zero-shot text score <profile, z_i> over the whitened catalog table (no release: public model,
           public catalog, own history);
- `lora`:  the LoRA user tower's scores (the federated adapter; the caller computes them with the model);
- `pop`:   log1p(noisy popularity count) / max (the popularity release, clamped at 0);
- `gram`:  EASE over the released head: x_u B, x_u the user's own head items (0 off the head);
- `cross`: the user's text code times the released cross weights (0 off the cross items).

Each component is max-normalised per user, so only the ratios of the weights matter; a weight of 0 drops a
component. Everything here runs on the device; nothing it computes leaves it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from fedrec.shared.hybrid.text import TextFeatures

#: released tensor names (the `released` part of the global model)
POP_COUNTS = "popularity.counts"
GRAM_ITEMS = "cooccurrence.items"
GRAM_WEIGHTS = "cooccurrence.ease"
CROSS_ITEMS = "cross.items"
CROSS_WEIGHTS = "cross.weights"

COMPONENTS = ("text", "lora", "pop", "gram", "cross")


def maxnorm(s: np.ndarray) -> np.ndarray:
    m = float(np.max(np.abs(s))) if s.size else 0.0
    return s / m if m > 0 else s


def popularity_score(counts: np.ndarray) -> np.ndarray:
    """log1p(max(count, 0)) / its max: the popularity prior in [0, 1]."""
    c = np.log1p(np.maximum(np.asarray(counts, dtype=np.float64), 0.0))
    top = float(c.max()) if c.size else 0.0
    return c / top if top > 0 else c


@dataclass(frozen=True)
class HybridScorer:
    """The blend weights and the released tensors; `score` ranks the catalog for one history."""

    weights: Mapping[str, float]
    released: Mapping[str, np.ndarray]
    catalog_size: int

    def __post_init__(self) -> None:
        unknown = sorted(set(self.weights) - set(COMPONENTS))
        if unknown:
            raise ValueError(f"hybrid weights: unknown component(s) {unknown}; known: {COMPONENTS}")

    def active(self) -> list[str]:
        """Components with a non-zero weight whose inputs exist (a component not released scores nothing)."""
        need = {"pop": POP_COUNTS, "gram": GRAM_WEIGHTS, "cross": CROSS_WEIGHTS}
        return [c for c, w in self.weights.items() if w != 0 and (c not in need or need[c] in self.released)]

    def components(self, items: np.ndarray, text: TextFeatures | None,
                   lora: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Each active component's max-normalised scores (M,) for a user with training `items`."""
        items = np.asarray(items, dtype=np.int64)
        out: dict[str, np.ndarray] = {}
        for name in self.active():
            if name == "text":
                if text is None:
                    raise ValueError("hybrid component 'text' needs the catalog's text features")
                out[name] = maxnorm(text.scores(items).astype(np.float64))
            elif name == "lora":
                if lora is None:
                    raise ValueError("hybrid component 'lora' needs the LoRA tower's scores")
                out[name] = maxnorm(np.asarray(lora, dtype=np.float64))
            elif name == "pop":
                out[name] = popularity_score(self.released[POP_COUNTS])
            elif name == "gram":
                out[name] = self._head_scores(items, self.released[GRAM_ITEMS], self.released[GRAM_WEIGHTS])
            elif name == "cross":
                out[name] = self._cross_scores(items, text)
        return out

    def score(self, items: np.ndarray, text: TextFeatures | None, lora: np.ndarray | None = None) -> np.ndarray:
        """The blended score of every catalog item (M,) for a user with training `items`."""
        total = np.zeros(self.catalog_size, dtype=np.float64)
        for name, s in self.components(items, text, lora).items():
            total += float(self.weights[name]) * s
        return total

    def _head_scores(self, items: np.ndarray, head: np.ndarray, b: np.ndarray) -> np.ndarray:
        head = np.asarray(head).astype(np.int64)
        x = np.isin(head, items).astype(np.float64)
        out = np.zeros(self.catalog_size, dtype=np.float64)
        out[head] = maxnorm(x @ np.asarray(b, dtype=np.float64))
        return out

    def _cross_scores(self, items: np.ndarray, text: TextFeatures | None) -> np.ndarray:
        if text is None:
            raise ValueError("hybrid component 'cross' needs the catalog's text features")
        w = np.asarray(self.released[CROSS_WEIGHTS], dtype=np.float64)
        code = text.code(items, w.shape[0])
        out = np.zeros(self.catalog_size, dtype=np.float64)
        out[np.asarray(self.released[CROSS_ITEMS]).astype(np.int64)] = maxnorm(code @ w)
        return out
