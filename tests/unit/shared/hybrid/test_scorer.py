"""The device's hybrid score: max-normalised components, weighted; absent releases score nothing."""

from __future__ import annotations

import numpy as np
import pytest

from fedrec.shared.hybrid.scorer import (
    CROSS_ITEMS,
    CROSS_WEIGHTS,
    GRAM_ITEMS,
    GRAM_WEIGHTS,
    POP_COUNTS,
    HybridScorer,
    maxnorm,
    popularity_score,
)
from fedrec.shared.hybrid.text import TextFeatures, whiten

M = 12


def _released() -> dict[str, np.ndarray]:
    b = np.zeros((3, 3))
    b[0, 1] = 2.0  # head item 0 (catalog 2) points at head item 1 (catalog 5)
    return {POP_COUNTS: np.arange(M, dtype=float) - 2.0, GRAM_ITEMS: np.array([2.0, 5.0, 7.0]), GRAM_WEIGHTS: b,
            CROSS_ITEMS: np.array([0.0, 11.0]), CROSS_WEIGHTS: np.ones((2, 2))}


def test_components_are_max_normalised_and_placed_on_their_items() -> None:
    # Prepare
    text = TextFeatures(whiten(np.random.default_rng(0).normal(size=(M, 4)).astype(np.float32)))
    scorer = HybridScorer({"text": 1.0, "pop": 1.0, "gram": 1.0, "cross": 1.0}, _released(), M)
    # Execute
    comps = scorer.components(np.array([2, 3]), text)
    # Assert
    assert set(comps) == {"text", "pop", "gram", "cross"}
    for s in comps.values():
        assert np.max(np.abs(s)) == pytest.approx(1.0)
    assert np.flatnonzero(comps["gram"]).tolist() == [5]  # EASE from catalog item 2 (the user's) to item 5
    assert set(np.flatnonzero(comps["cross"])) <= {0, 11}
    assert comps["pop"][:3].tolist() == [0.0, 0.0, 0.0]  # negative noisy counts are clamped
    np.testing.assert_allclose(scorer.score(np.array([2, 3]), text), sum(comps.values()))


def test_weights_are_ratios_and_zero_drops_a_component() -> None:
    released = _released()
    a = HybridScorer({"pop": 2.0}, released, M).score(np.array([1]), None)
    np.testing.assert_allclose(a, 2.0 * popularity_score(released[POP_COUNTS]))
    assert HybridScorer({"pop": 1.0, "gram": 0.0}, released, M).active() == ["pop"]


def test_a_component_without_its_release_scores_nothing() -> None:
    scorer = HybridScorer({"pop": 1.0, "gram": 1.0}, {POP_COUNTS: np.ones(M)}, M)
    assert scorer.active() == ["pop"]


def test_unknown_component_and_missing_inputs_are_errors() -> None:
    with pytest.raises(ValueError, match="unknown component"):
        HybridScorer({"magic": 1.0}, {}, M)
    with pytest.raises(ValueError, match="text features"):
        HybridScorer({"text": 1.0}, {}, M).score(np.array([1]), None)
    with pytest.raises(ValueError, match="LoRA"):
        HybridScorer({"lora": 1.0}, {}, M).score(np.array([1]), None)
    assert maxnorm(np.zeros(3)).tolist() == [0.0, 0.0, 0.0]
