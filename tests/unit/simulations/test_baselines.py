"""Baselines on tiny hand-built data: popularity counts, and factor models beating random on planted structure."""

from __future__ import annotations

import numpy as np
import pytest

from fedrec.shared.data.split import UserSplit, split_users
from fedrec.shared.data.types import UserHistory
from fedrec.simulations.baselines import (
    als_scorer,
    bpr_scorer,
    evaluate_scorer,
    interaction_matrix,
    popularity_counts,
    popularity_scorer,
)


def _split(user_id: str, train: list[int], test: int | None, val: int | None = None) -> UserSplit:
    return UserSplit(user_id, np.array(train, dtype=np.int64), np.ones(len(train)), val, test)


@pytest.fixture
def tiny() -> list[UserSplit]:
    # Item 0 is in almost everyone's training set; item 1 in two; user "e" has not heard item 0 and it is its
    # test item; user "f" is too short to evaluate (test None) but its training items still count.
    return [
        _split("a", [0, 2, 3], test=4, val=5),
        _split("b", [0, 1, 6], test=2, val=7),
        _split("c", [0, 1], test=3, val=4),
        _split("d", [0, 5], test=1, val=6),
        _split("e", [2, 3], test=0, val=1),
        _split("f", [0, 7], test=None),
    ]


def test_popularity_counts_training_users(tiny: list[UserSplit]) -> None:
    np.testing.assert_array_equal(popularity_counts(tiny, 8), [5, 2, 2, 2, 0, 1, 1, 1])


def test_popularity_recommends_the_popular_item(tiny: list[UserSplit]) -> None:
    res = evaluate_scorer(tiny, popularity_scorer(tiny, 8), num_items=8, k=1, num_negatives=3)
    # Only user "e" can be recommended item 0 (everyone else trains on it), and item 0 is its test item.
    assert res["users"] == 5
    assert res["hr@1"] == pytest.approx(1 / 5)
    assert res["ndcg@1"] == pytest.approx(1 / 5)


def test_interaction_matrix_values() -> None:
    splits = [UserSplit("u", np.array([2, 0]), np.array([3.0, 1.0]), None, None)]
    m = interaction_matrix(splits, 4, "count").toarray()
    np.testing.assert_allclose(m, [[1.0, 0.0, 3.0, 0.0]])
    np.testing.assert_allclose(interaction_matrix(splits, 4, "binary").toarray(), [[1.0, 0.0, 1.0, 0.0]])
    np.testing.assert_allclose(interaction_matrix(splits, 4, "log1p").toarray(), np.log1p(m), rtol=1e-6)
    with pytest.raises(ValueError):
        interaction_matrix(splits, 4, "raw")  # type: ignore[arg-type]


def test_evaluate_scorer_rejects_wrong_shape(tiny: list[UserSplit]) -> None:
    with pytest.raises(ValueError, match="shape"):
        evaluate_scorer(tiny, lambda s: np.zeros(7), num_items=8)


def test_validation_figures_do_not_change_test_figures(tiny: list[UserSplit]) -> None:
    rng = np.random.default_rng(0)
    table = rng.normal(size=(6, 8))
    by_user = {s.user_id: table[i] for i, s in enumerate(tiny)}
    plain = evaluate_scorer(tiny, lambda s: by_user[s.user_id], 8, num_negatives=3)
    both = evaluate_scorer(tiny, lambda s: by_user[s.user_id], 8, num_negatives=3, include_validation=True)
    assert {k: both[k] for k in plain} == plain
    assert both["val_users"] == 5


def _planted_blocks(seed: int = 0) -> tuple[list[UserSplit], int]:
    """4 taste groups of 60 users; each user listens to 12 items of its group's 50-item block."""
    rng = np.random.default_rng(seed)
    num_items, groups, per_group = 200, 4, 60
    users = []
    for g in range(groups):
        block = np.arange(g * 50, (g + 1) * 50)
        for j in range(per_group):
            items = rng.choice(block, size=12, replace=False)
            users.append(UserHistory(f"g{g}u{j}", items, rng.integers(1, 100, size=12).astype(float)))
    return split_users(users, seed=seed), num_items


def test_factor_models_beat_random_on_planted_structure() -> None:
    splits, num_items = _planted_blocks()
    noise = np.random.default_rng(1)
    random_hr = evaluate_scorer(splits, lambda s: noise.normal(size=num_items), num_items)["hr@10"]
    als_hr = evaluate_scorer(splits, als_scorer(splits, num_items, factors=8, iterations=10), num_items)["hr@10"]
    bpr_hr = evaluate_scorer(splits, bpr_scorer(splits, num_items, factors=8, iterations=200), num_items)["hr@10"]
    # Random: about 10 / 190 = 0.05. Knowing the block: about 10 / 38 = 0.26.
    assert random_hr < 0.12
    assert als_hr > 0.18 and als_hr > 2 * random_hr
    assert bpr_hr > 0.18 and bpr_hr > 2 * random_hr


def test_factor_models_are_reproducible_from_the_seed() -> None:
    splits, num_items = _planted_blocks()
    a = als_scorer(splits, num_items, factors=4, iterations=3, seed=3)(splits[0])
    b = als_scorer(splits, num_items, factors=4, iterations=3, seed=3)(splits[0])
    np.testing.assert_array_equal(a, b)
    c = bpr_scorer(splits, num_items, factors=4, iterations=5, seed=3)(splits[0])
    d = bpr_scorer(splits, num_items, factors=4, iterations=5, seed=3)(splits[0])
    np.testing.assert_array_equal(c, d)


def test_duplicate_user_ids_are_rejected() -> None:
    splits = [_split("a", [0], None), _split("a", [1], None)]
    with pytest.raises(ValueError, match="Duplicate"):
        als_scorer(splits, 3, factors=2, iterations=1)


def test_optimistic_ties_credit_tied_targets(tiny: list[UserSplit]) -> None:
    # Users b, c, d hold out an item tied (2 training users) with another candidate: a hit only when ties
    # are broken in the target's favour.
    res = evaluate_scorer(tiny, popularity_scorer(tiny, 8), 8, k=1, num_negatives=3, ties="optimistic")
    assert res["hr@1"] == pytest.approx(4 / 5)
