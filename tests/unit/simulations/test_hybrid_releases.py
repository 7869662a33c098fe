"""The quality benchmark's one-process release phase equals the federation's per-device path: the vectorised sum
equals the sum of `StatisticSpec.contribution` over the users, the matrices equal `HybridScorer.score`, and the
fast ranking equals `evaluate_scorer`."""

from __future__ import annotations

import numpy as np
import pytest

from fedrec.server.releases import spec_for
from fedrec.shared.config import RunConfig
from fedrec.shared.data.split import split_users
from fedrec.shared.data.synthetic import make_synthetic
from fedrec.shared.hybrid.scorer import POP_COUNTS
from fedrec.shared.hybrid.text import text_features
from fedrec.simulations.hybrid_eval import EvalData
from fedrec.simulations.hybrid_releases import Parts, Population, exact_sum, run_phase


@pytest.fixture(scope="module")
def population() -> Population:
    ds = make_synthetic(num_users=40, num_items=80, seed=4)
    splits = split_users(ds.users, seed=0)
    table = np.random.default_rng(0).standard_normal((len(ds.catalog), 12)).astype(np.float32)
    table /= np.linalg.norm(table, axis=1, keepdims=True)
    return Population(EvalData(splits, len(ds.catalog)), ds.catalog, table, text_features(table))


@pytest.mark.parametrize("kind", ["popularity", "cooccurrence", "cross"])
def test_the_vectorised_sum_is_the_sum_of_the_devices_contributions(population: Population, kind: str) -> None:
    cfg = RunConfig.from_mapping({"hybrid.gram_head": 15, "hybrid.gram_k": 4, "hybrid.cross_items": 20,
                                  "hybrid.cross_k": 5, "hybrid.cross_rank": 6, "secagg.enabled": True})
    counts = exact_sum(spec_for("popularity", cfg, {}, population.data.num_items), population,
                       population.histories())
    spec = spec_for(kind, cfg, {POP_COUNTS: counts}, population.data.num_items)
    histories = population.histories()
    want = sum(spec.contribution(items, weights, population.text)[kind].astype(np.float64)
               for items, weights in histories)
    np.testing.assert_allclose(exact_sum(spec, population, histories), want, atol=1e-4)


def test_the_matrices_score_as_the_hybrid_scorer_and_rank_as_evaluate_scorer(population: Population) -> None:
    cfg = RunConfig.from_mapping({"hybrid.releases": "popularity,cooccurrence,cross", "hybrid.gram_head": 15,
                                  "hybrid.gram_k": 4, "hybrid.cross_items": 20, "hybrid.cross_k": 5,
                                  "hybrid.cross_rank": 6, "user_dp.enabled": True, "user_dp.noise_multiplier": 2.0,
                                  "run.client_sampling": "poisson", "run.clients_per_round": 10})
    phase = run_phase(cfg, population, seed=0)
    assert phase.unit == "user" and phase.epsilon is not None and phase.epsilon > 0
    parts = Parts(population)
    weights = {"text": 1.0, "pop": 0.3, "gram": 1.0, "cross": 0.5}
    assert parts.check(phase.released, weights, rows=40) < 1e-5
    from fedrec.simulations.hybrid_eval import blend

    scores = np.asarray(blend(parts.of(phase.released), weights, len(population.data.users)))
    fast = population.data.metrics(scores, ("test",))
    slow = population.data.check(scores)
    assert fast["test"] == pytest.approx(slow["test"]) and fast["test_hr"] == pytest.approx(slow["test_hr"])
