"""Per-user leave-one-out split: one test item, one validation item, the rest for training.

Protocol (matches `../shared/notes/recsys-protocol.md`, so figures compare with the anchors there): one
`numpy.random.default_rng(seed)` for the whole data set; users in source order; each user's items in source
order; users with at least `min_interactions` items draw one permutation, whose index 0 is the test item and
index 1 the validation item. Users with fewer items train on everything and are not evaluated.

`holdout="none"` holds nothing out: every user trains on every item and nobody is evaluated (a model trained
for an outside evaluation, or for use, on all the data there is).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedrec.shared.data.types import UserHistory


@dataclass(frozen=True)
class UserSplit:
    """One user's split. `test_item`/`val_item` are None for users too short to evaluate."""

    user_id: str
    train_items: np.ndarray  # (n_train,) int64
    train_weights: np.ndarray  # (n_train,) float64
    val_item: int | None
    test_item: int | None
    train_timestamps: np.ndarray | None = None  # (n_train,) float64 or None

    @property
    def evaluated(self) -> bool:
        return self.test_item is not None


def split_users(users: list[UserHistory], seed: int = 0, min_interactions: int = 5,
                holdout: str = "test+validation") -> list[UserSplit]:
    """Split every user; deterministic in `seed` and the source order of users and items."""
    if min_interactions < 3:
        raise ValueError(f"`min_interactions` must be >= 3 (test + validation + >= 1 train). Found {min_interactions}.")
    if holdout not in ("test+validation", "none"):
        raise ValueError(f"`holdout` must be 'test+validation' or 'none'. Found {holdout!r}.")
    rng = np.random.default_rng(seed)
    out: list[UserSplit] = []
    for u in users:
        n = len(u)
        if n < min_interactions or holdout == "none":
            out.append(UserSplit(u.user_id, u.items.copy(), u.weights.copy(), None, None,
                                 None if u.timestamps is None else u.timestamps.copy()))
            continue
        perm = rng.permutation(n)
        test, val = int(perm[0]), int(perm[1])
        keep = np.ones(n, dtype=bool)
        keep[[test, val]] = False
        out.append(UserSplit(
            user_id=u.user_id,
            train_items=u.items[keep],
            train_weights=u.weights[keep],
            val_item=int(u.items[val]),
            test_item=int(u.items[test]),
            train_timestamps=None if u.timestamps is None else u.timestamps[keep],
        ))
    return out
