"""Hand-computed checks of the ranking metrics and of the mergeable accumulator."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedrec.shared.metrics import RankingMetrics, hit_at_k, ndcg_at_k, rank_of, sampled_rank, topk_excluding

EMPTY = np.array([], dtype=np.int64)


# ---- rank_of -------------------------------------------------------------------------------------------------


def test_rank_counts_only_non_excluded_items_above_target() -> None:
    scores = np.array([0.9, 0.5, 0.8, 0.1, 0.7])
    assert rank_of(scores, 4, EMPTY) == 2  # items 0 and 2 score higher
    assert rank_of(scores, 4, np.array([0])) == 1  # item 0 is a training item: only item 2 remains above
    assert rank_of(scores, 4, np.array([0, 2])) == 0
    assert rank_of(scores, 0, EMPTY) == 0
    assert rank_of(scores, 3, np.array([1])) == 3


def test_ties_are_pessimistic_by_default_and_optimistic_on_request() -> None:
    scores = np.array([1.0, 1.0, 1.0, 0.0, 2.0])
    assert rank_of(scores, 1, EMPTY) == 3  # item 4 above, items 0 and 2 tied: all counted above
    assert rank_of(scores, 1, EMPTY, ties="optimistic") == 1  # only item 4
    assert rank_of(scores, 1, np.array([0]), ties="pessimistic") == 2


def test_constant_scorer_gets_the_last_rank() -> None:
    scores = np.zeros(20)
    exclude = np.array([3, 4, 5])
    assert rank_of(scores, 0, exclude) == 20 - 1 - 3
    assert hit_at_k(rank_of(scores, 0, exclude)) == 0.0


def test_rank_rejects_bad_input() -> None:
    scores = np.array([0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="excluded"):
        rank_of(scores, 1, np.array([1]))
    with pytest.raises(IndexError):
        rank_of(scores, 3, EMPTY)
    with pytest.raises(ValueError, match="NaN"):
        rank_of(np.array([0.1, np.nan, 0.3]), 0, EMPTY)
    with pytest.raises(ValueError, match="ties"):
        rank_of(scores, 0, EMPTY, ties="random")  # type: ignore[arg-type]


# ---- HR / NDCG -----------------------------------------------------------------------------------------------


def test_ndcg_values() -> None:
    assert ndcg_at_k(0) == 1.0
    assert ndcg_at_k(1) == pytest.approx(1 / math.log2(3))
    assert ndcg_at_k(2) == pytest.approx(0.5)
    assert ndcg_at_k(9) == pytest.approx(1 / math.log2(11))
    assert ndcg_at_k(10) == 0.0
    assert ndcg_at_k(3, k=3) == 0.0
    assert ndcg_at_k(2, k=3) == pytest.approx(0.5)


def test_hit_values() -> None:
    assert hit_at_k(0) == 1.0
    assert hit_at_k(9) == 1.0
    assert hit_at_k(10) == 0.0
    assert hit_at_k(4, k=5) == 1.0
    assert hit_at_k(5, k=5) == 0.0


# ---- sampled_rank --------------------------------------------------------------------------------------------


def test_sampled_rank_bounds_and_extremes() -> None:
    rng = np.random.default_rng(0)
    scores = rng.normal(size=1000)
    exclude = np.arange(10)
    for target in rng.choice(np.arange(10, 1000), size=50, replace=False):
        r = sampled_rank(scores, int(target), exclude, rng=rng)
        assert 0 <= r <= 99
    best = int(np.argmax(scores[10:])) + 10
    worst = int(np.argmin(scores[10:])) + 10
    assert sampled_rank(scores, best, exclude, rng=rng) == 0
    assert sampled_rank(scores, worst, exclude, rng=rng) == 99


def test_sampled_negatives_never_include_excluded_items() -> None:
    # Excluded items score highest; if one were drawn as a negative the target's rank would be > 0.
    scores = np.concatenate([np.full(50, 100.0), np.linspace(0.0, 1.0, 200)])
    target = 249  # best among the non-excluded
    exclude = np.arange(50)
    rng = np.random.default_rng(1)
    assert all(sampled_rank(scores, target, exclude, rng=rng) == 0 for _ in range(20))


def test_sampled_rank_uses_every_candidate_when_too_few_remain() -> None:
    scores = np.array([0.9, 0.5, 0.8, 0.1, 0.7])
    rng = np.random.default_rng(0)
    assert sampled_rank(scores, 4, np.array([0]), num_negatives=99, rng=rng) == rank_of(scores, 4, np.array([0]))


def test_sampled_rank_is_reproducible_from_the_seed() -> None:
    scores = np.random.default_rng(3).normal(size=500)
    draws = [
        [sampled_rank(scores, t, EMPTY, rng=rng) for t in range(30)]
        for rng in (np.random.default_rng(7), np.random.default_rng(7))
    ]
    assert draws[0] == draws[1]


# ---- topk_excluding ------------------------------------------------------------------------------------------


def test_topk_order_exclusion_and_tie_break() -> None:
    scores = np.array([0.5, 0.9, 0.9, 0.1, 0.7, 0.9])
    np.testing.assert_array_equal(topk_excluding(scores, EMPTY, 3), [1, 2, 5])  # ties by lower index
    np.testing.assert_array_equal(topk_excluding(scores, np.array([2]), 3), [1, 5, 4])
    np.testing.assert_array_equal(topk_excluding(scores, np.array([1]), 2), [2, 5])
    np.testing.assert_array_equal(topk_excluding(scores, np.array([1, 2, 5]), 10), [4, 0, 3])  # fewer remain
    assert topk_excluding(scores, EMPTY, 2).dtype == np.int64


def test_topk_matches_a_full_sort() -> None:
    rng = np.random.default_rng(5)
    scores = rng.integers(0, 20, size=300).astype(float)  # many ties
    exclude = rng.choice(300, size=40, replace=False)
    keep = np.setdiff1d(np.arange(300), exclude)
    expected = keep[np.lexsort((keep, -scores[keep]))][:10]
    np.testing.assert_array_equal(topk_excluding(scores, exclude, 10), expected)


# ---- RankingMetrics ------------------------------------------------------------------------------------------


def test_accumulator_means_and_coverage() -> None:
    m = RankingMetrics(k=10, num_items=100)
    m.add(0, sampled=0, topk=np.arange(10))
    m.add(1, sampled=20, topk=np.arange(5, 15))
    m.add(10, topk=np.arange(10))
    s = m.summary()
    assert s["users"] == 3
    assert s["hr@10"] == pytest.approx(2 / 3)
    assert s["ndcg@10"] == pytest.approx((1 + 1 / math.log2(3)) / 3)
    assert s["hr@10_sampled"] == pytest.approx(0.5)  # over the 2 users with a sampled rank
    assert s["ndcg@10_sampled"] == pytest.approx(0.5)
    assert s["coverage@10"] == pytest.approx(15 / 100)


def test_add_scores_records_rank_sampled_rank_and_topk() -> None:
    scores = np.array([0.9, 0.5, 0.8, 0.1, 0.7])
    m = RankingMetrics(k=2, num_items=5)
    assert m.add_scores(scores, 4, np.array([0]), rng=np.random.default_rng(0)) == 1
    assert m.recommended == {2, 4}
    assert m.summary()["hr@2"] == 1.0
    assert m.sampled_users == 1


def test_empty_accumulator_gives_nan() -> None:
    s = RankingMetrics(num_items=10).summary()
    assert math.isnan(s["hr@10"]) and math.isnan(s["ndcg@10_sampled"])
    assert s["coverage@10"] == 0.0


def _random_contributions(rng: np.random.Generator, n: int, num_items: int) -> list[tuple[int, int, np.ndarray]]:
    return [
        (int(rng.integers(0, 30)), int(rng.integers(0, 100)), rng.choice(num_items, 10, replace=False))
        for _ in range(n)
    ]


def test_merge_equals_one_accumulator_over_all_users() -> None:
    rng = np.random.default_rng(11)
    data = _random_contributions(rng, 60, 500)
    whole = RankingMetrics(num_items=500)
    parts = [RankingMetrics(num_items=500) for _ in range(3)]
    for i, (rank, sampled, topk) in enumerate(data):
        whole.add(rank, sampled, topk)
        parts[i % 3].add(rank, sampled, topk)
    merged = parts[0].merge(parts[1]).merge(parts[2])
    for key, value in whole.summary().items():
        assert merged.summary()[key] == pytest.approx(value)
    assert merged.recommended == whole.recommended
    assert parts[0].users == 20  # merge does not change its inputs


def test_to_dict_round_trip_is_plain_data() -> None:
    m = RankingMetrics(k=5, num_negatives=49, num_items=50)
    m.add(2, 7, np.array([3, 1, 4, 1, 5]))
    d = m.to_dict()
    assert d["recommended"] == [1, 3, 4, 5]
    assert all(isinstance(v, int | float) for k, v in d.items() if k != "recommended")
    assert RankingMetrics.from_dict(d) == m


def test_merge_rejects_different_settings() -> None:
    with pytest.raises(ValueError, match="`k`"):
        RankingMetrics(k=10, num_items=5).merge(RankingMetrics(k=5, num_items=5))
    with pytest.raises(ValueError, match="`num_items`"):
        RankingMetrics(num_items=5).merge(RankingMetrics(num_items=6))


def test_sum_vectors_add_up_to_the_merged_metrics() -> None:
    """One `to_sums` vector per user, summed (what a secure sum gives the server), reads back as the merge of all
    users' metrics, coverage included, although no vector lists the items: only per-item counts."""
    rng = np.random.default_rng(12)
    whole = RankingMetrics(num_items=300)
    total = np.zeros(6 + 300)
    for rank, sampled, topk in _random_contributions(rng, 40, 300):
        one = RankingMetrics(num_items=300)
        one.add(rank, sampled, topk)
        whole.add(rank, sampled, topk)
        vector = one.to_sums()
        assert np.linalg.norm(vector) <= one.sums_bound() + 1e-12  # what each device may put in the sum
        total += vector
    back = RankingMetrics.from_sums(total + rng.uniform(-1e-3, 1e-3, total.shape), k=10, num_negatives=99,
                                    num_items=300)  # a fixed-point sum is off by far less than 1e-3
    assert back.users == whole.users and back.hit_sum == whole.hit_sum and back.recommended == whole.recommended
    for key, value in whole.summary().items():
        assert back.summary()[key] == pytest.approx(value, abs=1e-4)
    with pytest.raises(ValueError, match="expected 306 values"):
        RankingMetrics.from_sums(total[:-1], k=10, num_negatives=99, num_items=300)
