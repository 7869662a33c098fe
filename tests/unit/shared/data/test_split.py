"""The per-user split: deterministic, one test and one validation item, short users train only."""

from __future__ import annotations

import numpy as np
import pytest

from fedrec.shared.data.split import split_users
from fedrec.shared.data.types import UserHistory


def _user(uid: str, n: int) -> UserHistory:
    items = np.arange(100, 100 + n, dtype=np.int64)
    return UserHistory(uid, items, np.arange(1, n + 1, dtype=np.float64))


def test_split_partitions_each_history():
    """test + validation + train is exactly the user's items, with no overlap."""
    users = [_user("a", 7), _user("b", 5), _user("c", 12)]
    for u, s in zip(users, split_users(users, seed=0), strict=True):
        assert s.evaluated
        parts = list(s.train_items) + [s.val_item, s.test_item]
        assert sorted(parts) == sorted(u.items.tolist()) and len(set(parts)) == len(u)
        assert s.val_item != s.test_item
        # weights stay attached to their items
        for item, w in zip(s.train_items, s.train_weights, strict=True):
            assert w == u.weights[int(np.flatnonzero(u.items == item)[0])]


def test_short_users_train_only_and_do_not_consume_randomness():
    """Users with < 5 items keep everything for training and do not shift the others' split."""
    long_a, long_b, short = _user("a", 8), _user("b", 9), _user("s", 4)
    with_short = split_users([long_a, short, long_b], seed=0)
    without = split_users([long_a, long_b], seed=0)
    assert not with_short[1].evaluated and with_short[1].test_item is None
    assert with_short[1].train_items.tolist() == short.items.tolist()
    assert (with_short[2].test_item, with_short[2].val_item) == (without[1].test_item, without[1].val_item)


def test_split_is_deterministic_in_seed():
    """Same seed -> same split; another seed -> a different one somewhere."""
    users = [_user(str(i), 10) for i in range(20)]
    a, b, c = split_users(users, seed=0), split_users(users, seed=0), split_users(users, seed=1)
    assert [s.test_item for s in a] == [s.test_item for s in b]
    assert [s.test_item for s in a] != [s.test_item for s in c]


def test_min_interactions_must_leave_training_data():
    """A threshold below 3 would leave users with nothing to train on."""
    with pytest.raises(ValueError, match="min_interactions"):
        split_users([_user("a", 5)], min_interactions=2)


def test_holdout_none_trains_on_every_item():
    """`holdout="none"`: each user's whole history is training data and nobody is evaluated."""
    users = [_user("a", 7), _user("b", 12)]
    for u, s in zip(users, split_users(users, seed=0, holdout="none"), strict=True):
        assert not s.evaluated and s.val_item is None
        np.testing.assert_array_equal(s.train_items, u.items)
    with pytest.raises(ValueError, match="`holdout` must be"):
        split_users(users, holdout="two")
