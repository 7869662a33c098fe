"""Centralized, non-private baselines on the same leave-one-out split and metric code as the federated model.

They are the reference points for every federated / private figure: popularity (the floor any personalised
model must beat), ALS and BPR matrix factorisation from `implicit` (what a central server holding all
histories could reach). Hyperparameters follow `../shared/notes/recsys-protocol.md`, so the figures compare with
the anchors there. Each model is turned into a score function `UserSplit -> scores over the catalog`, and
`evaluate_scorer` evaluates any such function, so a new model needs only a score function to be compared.

Only `implicit.cpu` models are used: results must not depend on whether a GPU happens to be present.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from fedrec.shared.data.split import UserSplit
from fedrec.shared.metrics import RankingMetrics, Ties
from fedrec.shared.progress import task

ScoreFn = Callable[[UserSplit], np.ndarray]
"""Scores over the whole catalog (shape (num_items,)) for one user, higher is better."""


def interaction_matrix(
    splits: Sequence[UserSplit], num_items: int, values: Literal["count", "binary", "log1p"] = "count"
) -> sp.csr_matrix:
    """Users x items CSR matrix (float32) of the training interactions, one row per split in order.

    `values`: raw listen counts, 1.0 everywhere, or log1p(count) (ALS confidence is 1 + alpha * value).
    """
    rows = np.concatenate([np.full(len(s.train_items), u, dtype=np.int64) for u, s in enumerate(splits)])
    cols = np.concatenate([s.train_items for s in splits]).astype(np.int64)
    weights = np.concatenate([s.train_weights for s in splits]).astype(np.float64)
    if values == "binary":
        data = np.ones_like(weights)
    elif values == "log1p":
        data = np.log1p(weights)
    elif values == "count":
        data = weights
    else:
        raise ValueError(f"`values` must be 'count', 'binary' or 'log1p'. Found {values!r}.")
    return sp.csr_matrix((data.astype(np.float32), (rows, cols)), shape=(len(splits), num_items))


def popularity_counts(splits: Sequence[UserSplit], num_items: int) -> np.ndarray:
    """Number of users with each item in their training set (held-out items do not count)."""
    counts = np.zeros(num_items, dtype=np.float64)
    for s in splits:
        np.add.at(counts, s.train_items, 1.0)
    return counts


def popularity_scorer(splits: Sequence[UserSplit], num_items: int) -> ScoreFn:
    """Every user gets the same scores: the training popularity of each item."""
    counts = popularity_counts(splits, num_items)
    return lambda _split: counts


def _factor_scorer(splits: Sequence[UserSplit], user_factors: np.ndarray, item_factors: np.ndarray) -> ScoreFn:
    """Score function of a factor model whose user rows are in the order of `splits`."""
    row = {s.user_id: u for u, s in enumerate(splits)}
    if len(row) != len(splits):
        raise ValueError("Duplicate user ids in `splits`: factor rows could not be matched to users.")

    def score(split: UserSplit) -> np.ndarray:
        return item_factors @ user_factors[row[split.user_id]]

    return score


def als_scorer(
    splits: Sequence[UserSplit],
    num_items: int,
    factors: int = 64,
    iterations: int = 30,
    regularization: float = 0.01,
    seed: int = 0,
    num_threads: int = 1,
) -> ScoreFn:
    """Implicit-feedback ALS (Hu, Koren, Volinsky 2008) with confidence 1 + log1p(count).

    log1p tames Last.fm's heavy-tailed counts (up to ~350k listens), which would otherwise let one
    artist dominate a user's factor. alpha = 1, so implicit's confidence 1 + alpha * value is 1 + log1p(count).
    """
    from implicit.cpu.als import AlternatingLeastSquares

    matrix = interaction_matrix(splits, num_items, "log1p")
    # implicit recommends a single-threaded BLAS (its own threads parallelise over users); under the limit its
    # one-time check at construction does not warn.
    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(
            factors=factors, regularization=regularization, alpha=1.0, iterations=iterations,
            num_threads=num_threads, random_state=seed,
        )
        model.fit(matrix, show_progress=False)
    return _factor_scorer(splits, np.asarray(model.user_factors), np.asarray(model.item_factors))


def bpr_scorer(
    splits: Sequence[UserSplit],
    num_items: int,
    factors: int = 64,
    iterations: int = 200,
    learning_rate: float = 0.01,
    regularization: float = 0.01,
    seed: int = 0,
    num_threads: int = 1,
) -> ScoreFn:
    """BPR matrix factorisation (Rendle et al. 2009) on the binary training matrix.

    `num_threads=1` by default because implicit's BPR is Hogwild SGD: with several threads the result
    depends on thread scheduling and the seed no longer fixes it.
    """
    from implicit.cpu.bpr import BayesianPersonalizedRanking

    matrix = interaction_matrix(splits, num_items, "binary")
    with threadpool_limits(1, "blas"):
        model = BayesianPersonalizedRanking(
            factors=factors, learning_rate=learning_rate, regularization=regularization, iterations=iterations,
            num_threads=num_threads, random_state=seed,
        )
        model.fit(matrix, show_progress=False)
    # implicit's BPR appends an item-bias column to item_factors and a matching constant 1 to user_factors,
    # so the plain dot product includes the bias.
    return _factor_scorer(splits, np.asarray(model.user_factors), np.asarray(model.item_factors))


def evaluate_scorer(
    splits: Sequence[UserSplit],
    score_fn: ScoreFn,
    num_items: int,
    seed: int = 0,
    k: int = 10,
    num_negatives: int = 99,
    include_validation: bool = False,
    ties: Ties = "pessimistic",
) -> dict[str, float]:
    """HR@k, NDCG@k (full ranking and `num_negatives`-sampled) and coverage@k over evaluated users.

    The target is each user's test item; only the user's training items are excluded from the candidates (the
    validation item stays one, as in the anchor protocol). With `include_validation` the same figures for the
    validation item are added under `val_`-prefixed keys. The sampled negatives of test and validation come
    from independent streams of `seed`, so asking for validation figures does not change the test ones.
    `ties` is the rank tie rule of `fedrec.shared.metrics` (pessimistic unless reproducing outside figures).
    """
    test_rng, val_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    test = RankingMetrics(k=k, num_negatives=num_negatives, num_items=num_items)
    val = RankingMetrics(k=k, num_negatives=num_negatives, num_items=num_items)
    with task("evaluating", total=len(splits)) as bar:
        for split in splits:
            bar.advance()
            if split.evaluated:
                _rank_one(split, score_fn, num_items, test, val, test_rng, val_rng, include_validation, ties)
    out = test.summary()
    if include_validation:
        out.update({f"val_{name}": value for name, value in val.summary().items()})
    return out


def _rank_one(split: UserSplit, score_fn: ScoreFn, num_items: int, test: RankingMetrics, val: RankingMetrics,
              test_rng: np.random.Generator, val_rng: np.random.Generator, include_validation: bool,
              ties: Ties) -> None:
    """Add one user's test (and validation) rank to the accumulators."""
    scores = np.asarray(score_fn(split))
    if scores.shape != (num_items,):
        raise ValueError(f"Score function returned shape {scores.shape} for a catalog of {num_items} items.")
    test.add_scores(scores, int(split.test_item), split.train_items, rng=test_rng, ties=ties)
    if include_validation and split.val_item is not None:
        val.add_scores(scores, int(split.val_item), split.train_items, rng=val_rng, ties=ties)


def run_baselines(
    splits: Sequence[UserSplit],
    num_items: int,
    seed: int = 0,
    include_validation: bool = False,
    ties: Ties = "pessimistic",
) -> dict[str, dict[str, float]]:
    """Popularity, ALS and BPR with the protocol's hyperparameters, each evaluated by `evaluate_scorer`."""
    builders: dict[str, Callable[[], ScoreFn]] = {
        "popularity": lambda: popularity_scorer(splits, num_items),
        "als": lambda: als_scorer(splits, num_items, seed=seed),
        "bpr": lambda: bpr_scorer(splits, num_items, seed=seed),
    }
    return {
        name: evaluate_scorer(
            splits, build(), num_items, seed=seed, include_validation=include_validation, ties=ties
        )
        for name, build in builders.items()
    }
