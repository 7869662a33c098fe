"""Synthetic generator: determinism, shape, and structure a tag-aware model can learn."""

from __future__ import annotations

import numpy as np
import pytest

from fedrec.shared.data.split import split_users
from fedrec.shared.data.synthetic import GENRES, make_synthetic
from fedrec.shared.data.types import Dataset


def flat(ds: Dataset) -> tuple:
    """Everything in a data set, as comparable values."""
    users = [(u.user_id, u.items.tolist(), u.weights.tolist(), u.timestamps.tolist()) for u in ds.users]
    return ds.catalog.item_ids, ds.catalog.names, ds.catalog.tags, users


def test_same_seed_same_data_different_seed_different() -> None:
    assert flat(make_synthetic(seed=3)) == flat(make_synthetic(seed=3))
    a, b = flat(make_synthetic(seed=3)), flat(make_synthetic(seed=4))
    assert a[1] != b[1] and a[3] != b[3]


def test_default_shape_and_catalog() -> None:
    """Defaults: 60 users, 400 unique pronounceable names, a main genre first then 1-3 more tags."""
    ds = make_synthetic()
    assert len(ds.users) == 60 and len(ds.catalog) == 400
    assert len(set(ds.catalog.item_ids)) == 400
    assert len({n.casefold() for n in ds.catalog.names}) == 400
    assert all(n.strip() and n[0].isupper() for n in ds.catalog.names)
    for tags in ds.catalog.tags:
        assert tags[0] in GENRES and 2 <= len(tags) <= 4 and len(set(tags)) == len(tags)
    assert ds.summary.rows_read == ds.summary.rows_used == sum(len(u) for u in ds.users)


def test_histories_are_realistic() -> None:
    """Lengths in [5, 100] with median near 30; unique items; heavy-tailed counts; increasing timestamps."""
    ds = make_synthetic(num_users=400, num_items=2000, seed=1)
    lengths = np.array([len(u) for u in ds.users])
    assert lengths.min() >= 5 and lengths.max() <= 100
    assert 24 <= np.median(lengths) <= 36
    for u in ds.users:
        assert len(np.unique(u.items)) == len(u)
        assert u.items.dtype == np.int64 and u.items.min() >= 0 and u.items.max() < 2000
        assert np.all(np.diff(u.timestamps) > 0)
        assert u.weights.min() >= 1.0
    counts = np.concatenate([u.weights for u in ds.users])
    assert np.percentile(counts, 99) > 10 * np.median(counts)
    plays = np.bincount(np.concatenate([u.items for u in ds.users]), minlength=2000)
    top = np.sort(plays)[::-1]
    assert top[:20].sum() > 5 * top[1000:1020].sum()  # popularity is skewed


def test_held_out_items_follow_genre_tags() -> None:
    """A user's tag profile ranks the held-out item far better than popularity does."""
    ds = make_synthetic(num_users=200, num_items=600, seed=0)
    splits = [s for s in split_users(ds.users, seed=0) if s.evaluated]
    vocab = sorted({t for tags in ds.catalog.tags for t in tags})
    tag_matrix = np.zeros((len(ds.catalog), len(vocab)))  # (items, tags)
    for i, tags in enumerate(ds.catalog.tags):
        tag_matrix[i, [vocab.index(t) for t in tags]] = 1.0
    popularity = np.bincount(np.concatenate([s.train_items for s in splits]), minlength=len(ds.catalog))

    def hit_rate(score_fn) -> float:
        hits = 0
        for s in splits:
            scores = score_fn(s).astype(float)
            scores[s.train_items] = -np.inf
            hits += s.test_item in np.argsort(-scores, kind="stable")[:10]
        return hits / len(splits)

    pop_hr = hit_rate(lambda s: popularity)
    tag_hr = hit_rate(lambda s: tag_matrix @ tag_matrix[s.train_items].sum(0) + 1e-3 * popularity)
    assert tag_hr > 1.5 * pop_hr and tag_hr > 0.2


@pytest.mark.parametrize("kwargs", [{"num_users": 0}, {"num_items": 3}, {"min_history": 9, "max_history": 8},
                                    {"exploration": 1.5}])
def test_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="must be|Need"):
        make_synthetic(**kwargs)
