"""Ranking metrics for leave-one-out evaluation with one relevant item per user (pure numpy).

Protocol (matches `../shared/notes/recsys-protocol.md`): each evaluated user has one held-out target item. A
model scores the whole catalog; the user's training items are removed from the candidates (recommending what
the user already listens to is not a useful prediction); the target's 0-based position among the remaining
candidates is its rank r. With one relevant item

    HR@k   = 1                 if r < k, else 0
    NDCG@k = 1 / log2(r + 2)   if r < k, else 0     (the ideal DCG is 1: the relevant item at position 0)

and both are averaged over evaluated users. The "sampled" variants rank the target among itself plus
`num_negatives` (99 by default) items drawn uniformly, without replacement, from the candidates; they are
reported only to compare with papers that use them (PFedRec, FedRAP); they overstate quality, full ranking is
the headline figure.

Ties are broken *against* the target by default (`ties="pessimistic"`): every candidate scoring the same as
the target counts as ranked above it. A model therefore earns nothing from ties; a constant scorer gets
HR = NDCG = 0 instead of whatever an arbitrary index order would give it. `ties="optimistic"` counts only
strictly higher scores (the common `(s > s[t]).sum()` idiom); the protocol notes' popularity anchor
(HR@10 0.0735, NDCG@10 0.0405 on Last.fm-2K) was computed that way, the pessimistic rule gives 0.0719 / 0.0400
on the same split. For continuous scores (ALS, BPR, neural models) ties practically never occur and the rule
changes nothing.

`RankingMetrics` is an accumulator of sums and counts, so that federated clients can each evaluate their own
users and send only these sums (plus the ids of the items they were recommended, for catalog coverage); the
server merges the contributions and the merged means equal those of one evaluation over all users. Under a
privacy setting a device sends them only inside a secure sum, as one vector (`to_sums`: the sums and one count
per catalog item instead of the id list), and the server reads the total back with `from_sums`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

Ties = Literal["pessimistic", "optimistic"]


def _candidate_mask(num_items: int, exclude: np.ndarray, target: int | None = None) -> np.ndarray:
    """Boolean mask of items that may be ranked: not excluded and (if given) not the target itself."""
    mask = np.ones(num_items, dtype=bool)
    mask[np.asarray(exclude, dtype=np.int64)] = False
    if target is not None:
        mask[target] = False
    return mask


def _check_scores(scores: np.ndarray) -> np.ndarray:
    scores = np.asarray(scores)
    if scores.ndim != 1:
        raise ValueError(f"`scores` must be 1-D over the catalog. Found shape {scores.shape}.")
    if np.isnan(scores).any():
        raise ValueError("`scores` contains NaN: a NaN score cannot be ranked.")
    return scores


def _check_target(scores: np.ndarray, target: int, exclude: np.ndarray) -> None:
    if not 0 <= target < scores.shape[0]:
        raise IndexError(f"`target` {target} is outside the catalog of {scores.shape[0]} items.")
    if np.any(np.asarray(exclude) == target):
        raise ValueError(f"`target` {target} is among the excluded (training) items: it cannot be ranked.")


def _count_above(others: np.ndarray, target_score: float, ties: Ties) -> int:
    if ties == "pessimistic":
        return int(np.count_nonzero(others >= target_score))
    if ties == "optimistic":
        return int(np.count_nonzero(others > target_score))
    raise ValueError(f"`ties` must be 'pessimistic' or 'optimistic'. Found {ties!r}.")


def rank_of(scores: np.ndarray, target: int, exclude: np.ndarray, ties: Ties = "pessimistic") -> int:
    """0-based rank of `target` among all catalog items except `exclude` (the user's training items).

    pessimistic: rank = |{j in C : s_j > s_t}| + |{j in C : s_j = s_t}|
    optimistic:  rank = |{j in C : s_j > s_t}|
    with C = catalog - exclude - {target} (see the module docstring for why pessimistic is the default).
    """
    scores = _check_scores(scores)
    _check_target(scores, target, exclude)
    candidates = scores[_candidate_mask(scores.shape[0], exclude, target)]
    return _count_above(candidates, scores[target], ties)


def sampled_rank(
    scores: np.ndarray,
    target: int,
    exclude: np.ndarray,
    num_negatives: int = 99,
    *,
    rng: np.random.Generator,
    ties: Ties = "pessimistic",
) -> int:
    """0-based rank of `target` among itself plus `num_negatives` sampled negatives, in [0, num_negatives].

    Negatives are drawn uniformly without replacement from catalog - exclude - {target} (all of them if fewer
    remain). `ties` as in `rank_of`. `rng` is required so that every caller states its seed: sampled figures
    are only reproducible with the same negatives.
    """
    scores = _check_scores(scores)
    _check_target(scores, target, exclude)
    if num_negatives < 1:
        raise ValueError(f"`num_negatives` must be >= 1. Found {num_negatives}.")
    pool = np.flatnonzero(_candidate_mask(scores.shape[0], exclude, target))
    negatives = rng.choice(pool, size=min(num_negatives, pool.size), replace=False)
    return _count_above(scores[negatives], scores[target], ties)


def hit_at_k(rank: int, k: int = 10) -> float:
    """HR@k for one relevant item: 1 if it is in the top k (rank < k), else 0."""
    return 1.0 if rank < k else 0.0


def ndcg_at_k(rank: int, k: int = 10) -> float:
    """NDCG@k for one relevant item: 1 / log2(rank + 2) if rank < k, else 0 (rank 0 gives 1)."""
    return 1.0 / math.log2(rank + 2) if rank < k else 0.0


def topk_excluding(scores: np.ndarray, exclude: np.ndarray, k: int) -> np.ndarray:
    """The `k` best-scoring items not in `exclude`, best first (fewer if fewer remain); int64 item indices.

    Ties are broken by the lower item index, so the list is deterministic. This is the list a user would be
    shown, and it feeds catalog coverage; HR/NDCG use `rank_of`, whose pessimistic tie rule can differ from
    this order only when the target ties with an item near position k.
    """
    scores = _check_scores(scores)
    if k < 1:
        raise ValueError(f"`k` must be >= 1. Found {k}.")
    pool = np.flatnonzero(_candidate_mask(scores.shape[0], exclude))
    pool_scores = scores[pool]
    if k < pool.size:
        # The k-th largest score, then everything strictly above it plus the lowest-index ties at it.
        kth = np.partition(pool_scores, pool.size - k)[pool.size - k]
        above = pool[pool_scores > kth]
        tied = pool[pool_scores == kth][: k - above.size]
        pool = np.concatenate([above, tied])
    order = np.lexsort((pool, -scores[pool].astype(np.float64)))
    return pool[order].astype(np.int64)


#: The scalar sums of a contribution, in the order of `RankingMetrics.to_sums`.
SUM_FIELDS = ("users", "hit_sum", "ndcg_sum", "sampled_users", "sampled_hit_sum", "sampled_ndcg_sum")


@dataclass
class RankingMetrics:
    """Mergeable sums behind HR@k, NDCG@k (full and sampled) and catalog coverage@k.

    coverage@k = |union over users of their top-k lists| / num_items. Its contribution is the set of item ids
    recommended to a client's users: this reveals recommendations (derived from private histories), not the
    histories themselves; a client that must not reveal even that can leave `topk` out of `add`.
    """

    k: int = 10
    num_negatives: int = 99
    num_items: int = 0  # catalog size, the denominator of coverage
    users: int = 0
    hit_sum: float = 0.0
    ndcg_sum: float = 0.0
    sampled_users: int = 0
    sampled_hit_sum: float = 0.0
    sampled_ndcg_sum: float = 0.0
    recommended: set[int] = field(default_factory=set)

    def add(self, rank: int, sampled: int | None = None, topk: np.ndarray | None = None) -> None:
        """Record one user's full-ranking rank, optionally its sampled rank and its top-k list."""
        self.users += 1
        self.hit_sum += hit_at_k(rank, self.k)
        self.ndcg_sum += ndcg_at_k(rank, self.k)
        if sampled is not None:
            self.sampled_users += 1
            self.sampled_hit_sum += hit_at_k(sampled, self.k)
            self.sampled_ndcg_sum += ndcg_at_k(sampled, self.k)
        if topk is not None:
            self.recommended.update(int(i) for i in np.asarray(topk)[: self.k])

    def add_scores(
        self,
        scores: np.ndarray,
        target: int,
        exclude: np.ndarray,
        rng: np.random.Generator | None = None,
        ties: Ties = "pessimistic",
    ) -> int:
        """Rank `target` under `scores` and record it (sampled rank too when `rng` is given); returns the rank.

        `ties` is not stored (Flower metric records hold no strings): contributions to be merged must all be
        computed with the same rule.
        """
        rank = rank_of(scores, target, exclude, ties)
        sampled = (
            None if rng is None
            else sampled_rank(scores, target, exclude, self.num_negatives, rng=rng, ties=ties)
        )
        self.add(rank, sampled, topk_excluding(scores, exclude, self.k))
        return rank

    def merge(self, other: RankingMetrics) -> RankingMetrics:
        """A new accumulator holding both contributions (neither input is changed)."""
        for name in ("k", "num_negatives", "num_items"):
            if getattr(self, name) != getattr(other, name):
                mine, theirs = getattr(self, name), getattr(other, name)
                raise ValueError(f"Cannot merge metrics with different `{name}`: {mine} vs {theirs}.")
        return RankingMetrics(
            k=self.k,
            num_negatives=self.num_negatives,
            num_items=self.num_items,
            users=self.users + other.users,
            hit_sum=self.hit_sum + other.hit_sum,
            ndcg_sum=self.ndcg_sum + other.ndcg_sum,
            sampled_users=self.sampled_users + other.sampled_users,
            sampled_hit_sum=self.sampled_hit_sum + other.sampled_hit_sum,
            sampled_ndcg_sum=self.sampled_ndcg_sum + other.sampled_ndcg_sum,
            recommended=self.recommended | other.recommended,
        )

    def to_dict(self) -> dict[str, Any]:
        """The raw sums as plain ints, floats and a sorted list[int]: what a client sends (Flower metrics)."""
        return {
            "k": self.k,
            "num_negatives": self.num_negatives,
            "num_items": self.num_items,
            "users": self.users,
            "hit_sum": self.hit_sum,
            "ndcg_sum": self.ndcg_sum,
            "sampled_users": self.sampled_users,
            "sampled_hit_sum": self.sampled_hit_sum,
            "sampled_ndcg_sum": self.sampled_ndcg_sum,
            "recommended": sorted(self.recommended),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RankingMetrics:
        """Inverse of `to_dict` (what the server does with each client's contribution)."""
        return cls(
            k=int(d["k"]),
            num_negatives=int(d["num_negatives"]),
            num_items=int(d["num_items"]),
            users=int(d["users"]),
            hit_sum=float(d["hit_sum"]),
            ndcg_sum=float(d["ndcg_sum"]),
            sampled_users=int(d["sampled_users"]),
            sampled_hit_sum=float(d["sampled_hit_sum"]),
            sampled_ndcg_sum=float(d["sampled_ndcg_sum"]),
            recommended={int(i) for i in d["recommended"]},
        )

    def to_sums(self) -> np.ndarray:
        """The contribution as one float64 vector of sums, what a device adds into a secure sum under a privacy
        setting: [users, hit, ndcg, sampled users, sampled hit, sampled ndcg] then one count per catalog item (1 if
        it is in this contribution's top-k lists). Summing vectors sums every field; coverage is the number of
        items with a count > 0, so no per-user list ever has to leave a device."""
        head = [getattr(self, f) for f in SUM_FIELDS]
        counts = np.zeros(self.num_items, dtype=np.float64)
        if self.recommended:
            counts[np.fromiter(self.recommended, dtype=np.int64)] = 1.0
        return np.concatenate([np.asarray(head, dtype=np.float64), counts])

    @classmethod
    def from_sums(cls, sums: np.ndarray, *, k: int, num_negatives: int, num_items: int) -> RankingMetrics:
        """The merged metrics from a (decoded) sum of `to_sums` vectors. Counts are rounded to integers: a
        fixed-point secure sum carries a tiny quantization error (far below 1/2 per field, see
        `fedrec.shared.secagg.encoding.evaluation_encoding`)."""
        v = np.asarray(sums, dtype=np.float64).ravel()
        if v.size != len(SUM_FIELDS) + num_items:
            raise ValueError(f"evaluation sums: expected {len(SUM_FIELDS) + num_items} values, found {v.size}")
        head = dict(zip(SUM_FIELDS, v[: len(SUM_FIELDS)], strict=True))
        counts = np.rint(v[len(SUM_FIELDS):])
        return cls(k=k, num_negatives=num_negatives, num_items=num_items, users=int(round(head["users"])),
                   hit_sum=float(round(head["hit_sum"])), ndcg_sum=float(head["ndcg_sum"]),
                   sampled_users=int(round(head["sampled_users"])),
                   sampled_hit_sum=float(round(head["sampled_hit_sum"])),
                   sampled_ndcg_sum=float(head["sampled_ndcg_sum"]),
                   recommended={int(i) for i in np.flatnonzero(counts > 0)})

    def sums_bound(self) -> float:
        """An L2 bound on `to_sums()` of one user's contribution: six fields in [0, 1] and k ones."""
        return math.sqrt(len(SUM_FIELDS) + self.k)

    def summary(self) -> dict[str, float]:
        """Means over users: hr@k, ndcg@k, hr@k_sampled, ndcg@k_sampled, coverage@k (NaN where undefined)."""

        def mean(total: float, n: int) -> float:
            return total / n if n else float("nan")

        k = self.k
        return {
            "users": float(self.users),
            f"hr@{k}": mean(self.hit_sum, self.users),
            f"ndcg@{k}": mean(self.ndcg_sum, self.users),
            f"hr@{k}_sampled": mean(self.sampled_hit_sum, self.sampled_users),
            f"ndcg@{k}_sampled": mean(self.sampled_ndcg_sum, self.sampled_users),
            f"coverage@{k}": mean(float(len(self.recommended)), self.num_items),
        }
