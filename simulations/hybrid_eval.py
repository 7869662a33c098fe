"""Fast full-ranking evaluation of score matrices, and the centralized reference models, for the quality benchmark.

`bench_privacy_utility` compares dozens of blends and noise seeds; ranking one user at a time through
`fedrec.simulations.baselines.evaluate_scorer` (the federation's own protocol) would cost minutes per blend. This
module computes the same figures on whole matrices: for each evaluated user the 0-based *pessimistic* rank of the
target among every catalog item except the user's training items (the validation item stays a candidate for the
test target, as in `RankingMetrics`). `EvalData.check` compares it with `evaluate_scorer` on one matrix so a
benchmark states that both agree.

The cold-start subset: evaluated users whose target has fewer than `COLD` training listeners over all users.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from fedrec.shared.data.split import UserSplit

COLD = 5  # a target with fewer training listeners than this is "cold"


def train_matrix(splits: Sequence[UserSplit], num_items: int, values: str = "binary") -> sp.csr_matrix:
    """(users, items) training interactions: 1, or log1p(listen count) with `values='log1p'`."""
    rows = np.concatenate([np.full(len(s.train_items), u) for u, s in enumerate(splits)])
    cols = np.concatenate([s.train_items for s in splits]).astype(np.int64)
    w = np.concatenate([s.train_weights for s in splits]).astype(np.float64)
    vals = np.ones_like(w) if values == "binary" else np.log1p(np.maximum(w, 0.0))
    return sp.csr_matrix((vals, (rows, cols)), shape=(len(splits), num_items))


@dataclass
class EvalData:
    """The evaluated users of a split: targets, training items (as CSR rows) and the cold masks."""

    splits: list[UserSplit]  # every user (the releases' population)
    num_items: int

    def __post_init__(self) -> None:
        self.users = np.array([u for u, s in enumerate(self.splits) if s.evaluated], dtype=np.int64)
        self.binary = train_matrix(self.splits, self.num_items)
        xu = self.binary[self.users]
        self._rows = np.repeat(np.arange(len(self.users)), np.diff(xu.indptr))
        self._cols = xu.indices
        self.targets = {"val": np.array([self.splits[u].val_item for u in self.users], dtype=np.int64),
                        "test": np.array([self.splits[u].test_item for u in self.users], dtype=np.int64)}
        listeners = np.asarray(self.binary.sum(0)).ravel()
        self.cold = {w: listeners[t] < COLD for w, t in self.targets.items()}

    @property
    def evaluated(self) -> list[UserSplit]:
        return [self.splits[u] for u in self.users]

    def ranks(self, scores: np.ndarray, which: str) -> np.ndarray:
        """0-based pessimistic rank of each evaluated user's `which` target; `scores` is (evaluated users, M)."""
        t = self.targets[which]
        at = scores[np.arange(len(t)), t]
        ge = scores >= at[:, None]
        count = ge.sum(1) - 1
        own = ge[self._rows, self._cols]  # training items never compete
        return count - np.bincount(self._rows[own], minlength=len(t))

    def metrics(self, scores: np.ndarray, which: Sequence[str] = ("val", "test"), k: int = 10) -> dict[str, float]:
        """NDCG@k, HR@k and cold-start NDCG@k per target kind: keys `val`, `val_hr`, `val_cold`, `test`, ..."""
        out: dict[str, float] = {}
        for w in which:
            r = self.ranks(scores, w)
            ndcg = np.where(r < k, 1.0 / np.log2(r + 2.0), 0.0)
            out[w], out[f"{w}_hr"] = float(ndcg.mean()), float((r < k).mean())
            out[f"{w}_cold"] = float(ndcg[self.cold[w]].mean()) if self.cold[w].any() else float("nan")
        return out

    def check(self, scores: np.ndarray) -> dict[str, float]:
        """The same matrix through `evaluate_scorer` (the federation's ranking code): test NDCG@10 and HR@10."""
        from fedrec.simulations.baselines import evaluate_scorer

        row = {int(u): i for i, u in enumerate(self.users)}
        index = {id(s): u for u, s in enumerate(self.splits)}
        r = evaluate_scorer(self.splits, lambda s: scores[row[index[id(s)]]].astype(np.float64), self.num_items)
        return {"test": r["ndcg@10"], "test_hr": r["hr@10"]}


def maxnorm_rows(s: np.ndarray) -> np.ndarray:
    """Each row divided by its largest absolute value (rows of zeros stay zero): `HybridScorer`'s normalisation."""
    m = np.abs(s).max(1, keepdims=True)
    return np.divide(s, m, out=np.zeros_like(s), where=m > 0)


def blend(parts: Mapping[str, np.ndarray], weights: Mapping[str, float], rows: int) -> np.ndarray:
    """sum_k w_k parts[k] as a (rows, M) matrix (a part may be a row vector shared by every user)."""
    total: np.ndarray | None = None
    for name, w in weights.items():
        if w == 0 or name not in parts:
            continue
        term = np.float32(w) * parts[name]
        total = term if total is None else total + term
    if total is None:
        raise ValueError("blend: every weight is 0")
    return np.broadcast_to(total, (rows, total.shape[-1])) if total.ndim == 1 else total


def grid_search(data: EvalData, parts_by_seed: Sequence[Mapping[str, np.ndarray]],
                grids: Mapping[str, Sequence[float]]) -> tuple[float, dict[str, float]]:
    """The weights (product of `grids`) with the best mean validation NDCG@10 over the given noise seeds."""
    best: tuple[float, dict[str, float]] = (-1.0, {})
    keys = list(grids)
    for values in itertools.product(*(grids[k] for k in keys)):
        w = dict(zip(keys, values, strict=True))
        if all(v == 0 for v in w.values()):
            continue
        val = float(np.mean([data.metrics(blend(p, w, len(data.users)), ("val",))["val"] for p in parts_by_seed]))
        if val > best[0]:
            best = (val, w)
    return best


# -- centralized references (non-private: they see every user's data) --------------------------------------------

def als_scores(data: EvalData, factors: int, regularization: float, alpha: float, seed: int = 0) -> np.ndarray:
    """Implicit ALS on log1p counts (confidence 1 + alpha log1p(count)), scores for the evaluated users."""
    from implicit.cpu.als import AlternatingLeastSquares

    matrix = train_matrix(data.splits, data.num_items, "log1p").astype(np.float32).tocsr()
    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(factors=factors, regularization=regularization, alpha=alpha, iterations=30,
                                        num_threads=1, random_state=seed)
        model.fit(matrix, show_progress=False)
    return (np.asarray(model.user_factors)[data.users] @ np.asarray(model.item_factors).T).astype(np.float32)


def ease_scores(data: EvalData, lam: float, min_listeners: int = 2) -> np.ndarray:
    """EASE (Steck 2019) on the exact item Gram over items with >= `min_listeners` training listeners."""
    from fedrec.shared.hybrid.postprocess import ease

    keep = np.flatnonzero(np.asarray(data.binary.sum(0)).ravel() >= min_listeners)
    x = data.binary[:, keep]
    b = ease((x.T @ x).toarray(), lam)
    out = np.full((len(data.users), data.num_items), -1e9, dtype=np.float32)
    out[:, keep] = (x[data.users] @ b).astype(np.float32)
    return out


def itemknn_scores(data: EvalData, alpha: float, min_listeners: int = 2) -> np.ndarray:
    """ItemKNN: cosine item-item similarity (binary), raised to `alpha`, summed over the user's items."""
    keep = np.flatnonzero(np.asarray(data.binary.sum(0)).ravel() >= min_listeners)
    x = data.binary[:, keep]
    g = (x.T @ x).toarray()
    norm = np.sqrt(np.diag(g))
    sim = (g / np.outer(norm, norm)) ** alpha
    np.fill_diagonal(sim, 0.0)
    out = np.full((len(data.users), data.num_items), -1e9, dtype=np.float32)
    out[:, keep] = (x[data.users] @ sim).astype(np.float32)
    return out


def tuned(data: EvalData, build: Callable[..., np.ndarray], grid: Mapping[str, Sequence[float]],
          ) -> tuple[dict[str, float], dict[str, float]]:
    """(metrics, chosen parameters) of a reference model whose parameters are chosen on validation."""
    best: tuple[float, dict[str, float], np.ndarray | None] = (-1.0, {}, None)
    keys = list(grid)
    for values in itertools.product(*(grid[k] for k in keys)):
        params = dict(zip(keys, values, strict=True))
        scores = build(**params)
        val = data.metrics(scores, ("val",))["val"]
        if val > best[0]:
            best = (val, params, scores)
    assert best[2] is not None
    return data.metrics(best[2]), best[1]
