"""Each release's contribution: its L2 bound is the sensitivity the accountant assumes, whatever the history."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedrec.shared.hybrid.statistics import StatisticSpec, is_release, top_k_items
from fedrec.shared.hybrid.text import TextFeatures, whiten

M = 60


def _spec(kind: str, k: int = 5) -> StatisticSpec:
    items = None if kind == "popularity" else np.arange(0, M, 2)  # a public list of 30 items
    return StatisticSpec(kind=kind, k=k, catalog_size=M, items=items, rank=4 if kind == "cross" else 0)


def _text() -> TextFeatures:
    rng = np.random.default_rng(0)
    return TextFeatures(whiten(rng.normal(size=(M, 8)).astype(np.float32)))


@pytest.mark.parametrize(("kind", "k", "delta"), [("popularity", 5, math.sqrt(5)),
                                                  ("cooccurrence", 5, math.sqrt(15)),
                                                  ("cross", 5, math.sqrt(5))])
def test_sensitivity_is_the_worst_case_norm(kind: str, k: int, delta: float) -> None:
    """A user with many items reaches the sensitivity exactly; it is the formula of the module docstring."""
    # Prepare
    spec = _spec(kind, k)
    items = np.arange(M)  # plays every item: the top-k is full
    counts = np.arange(M, 0, -1).astype(float)
    # Execute
    c = spec.contribution(items, counts, _text())
    # Assert
    assert spec.sensitivity == pytest.approx(delta)
    assert np.linalg.norm(c[kind]) == pytest.approx(delta, rel=1e-5)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(["popularity", "cooccurrence", "cross"]), st.integers(1, 8),
       st.lists(st.integers(0, M - 1), min_size=1, max_size=40, unique=True), st.integers(0, 2**31))
def test_no_history_exceeds_the_sensitivity(kind: str, k: int, items: list[int], seed: int) -> None:
    """Clipping holds for any history: ||c|| <= Δ (float32 rounding aside)."""
    spec = _spec(kind, k)
    counts = np.random.default_rng(seed).integers(1, 50, size=len(items)).astype(float)
    c = spec.contribution(np.array(items), counts, _text())
    assert np.linalg.norm(c[kind].astype(np.float64)) <= spec.sensitivity * (1 + 1e-6)
    assert c[kind].shape == spec.shape and c[kind].dtype == np.float32


def test_only_the_top_k_items_count_and_ties_go_to_the_lower_index() -> None:
    """The indicator holds the k most-played items; equal counts are broken by catalog index."""
    assert top_k_items(np.array([7, 3, 9, 1]), np.array([5.0, 5.0, 9.0, 1.0]), 2).tolist() == [3, 9]
    x = _spec("popularity", 2).indicator(np.array([7, 3, 9]), np.array([5.0, 5.0, 9.0]))
    assert np.flatnonzero(x).tolist() == [3, 9]


def test_items_off_the_public_list_do_not_count() -> None:
    """A head statistic only sees the user's items on its public list (odd items are off it here)."""
    spec = _spec("cooccurrence", 3)
    c = spec.contribution(np.array([1, 3, 5, 7]), np.ones(4), None)
    assert not c["cooccurrence"].any()


def test_spec_round_trips_through_a_message() -> None:
    spec = _spec("cross", 3)
    back = StatisticSpec.from_message(spec.to_config(), spec.arrays())
    assert back == spec and np.array_equal(back.items, spec.items)
    assert is_release(spec.to_config()) and not is_release({"train.local_epochs": 1})
    with pytest.raises(ValueError, match="missing"):
        StatisticSpec.from_message({}, {})


def test_a_head_statistic_needs_its_item_list() -> None:
    with pytest.raises(ValueError, match="item list"):
        StatisticSpec(kind="cooccurrence", k=3, catalog_size=M)
