"""The 20-candidate protocol: the test item plus 19 never-seen items, the same for every model; ties count
against the test item."""

from __future__ import annotations

import numpy as np

from fedrec.shared.data.split import split_users
from fedrec.shared.data.synthetic import make_synthetic
from fedrec.simulations.bench_candidates import candidate_rank, draw_candidates


def test_candidates_are_the_test_item_and_19_unseen_items_drawn_once() -> None:
    ds = make_synthetic(num_users=30, num_items=200, seed=1)
    splits = split_users(ds.users)
    cands = draw_candidates(splits, 200, seed=0)
    assert set(cands) == {s.user_id for s in splits if s.evaluated}
    for s in splits:
        if s.evaluated:
            c = cands[s.user_id]
            seen = {*s.train_items.tolist(), s.val_item, s.test_item}
            assert len(c) == 20 == len(set(c.tolist())) and c[0] == s.test_item
            assert not set(c[1:].tolist()) & seen
    again = draw_candidates(splits, 200, seed=0)
    assert all(np.array_equal(cands[u], again[u]) for u in cands)


def test_rank_counts_ties_against_the_test_item() -> None:
    row = np.array([0.0, 5.0, 1.0, 5.0, 2.0])
    assert candidate_rank(row, np.array([1, 0, 2])) == 0  # strictly best
    assert candidate_rank(row, np.array([1, 3, 0])) == 1  # a tie is above it
    assert candidate_rank(row, np.array([0, 4, 2])) == 2
