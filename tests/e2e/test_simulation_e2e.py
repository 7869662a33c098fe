"""End to end: a real Flower simulation (Ray backend) on synthetic data, a few clients, 2 rounds."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fedrec.shared.data.federation import load_federation
from fedrec.shared.model.build import build_model
from fedrec.shared.model.recommender import trainable_state
from fedrec.shared.run_dir import read_adapter


def random_ndcg(num_items: int, num_train: int, k: int = 10) -> float:
    """Expected NDCG@k of a uniformly random ranking over the num_items - num_train candidates."""
    n = num_items - num_train
    return sum(1.0 / np.log2(r + 2) for r in range(min(k, n))) / n


@pytest.fixture(scope="module")
def run(sim_run):
    return sim_run


def test_every_round_completed_with_metrics(run):
    """Both rounds aggregated 4 client updates and produced evaluation metrics over every evaluable user."""
    cfg, path = run
    rounds = json.loads((path / "rounds.json").read_text())
    fed = load_federation(cfg)
    assert [r["round"] for r in rounds] == [1, 2]
    for r in rounds:
        assert r["status"] == "ok" and r["updates"] == 4 and r["failed"] == 0
        assert r["eval_users"] == sum(s.evaluated for s in fed.splits)
        assert r["bytes_up_per_client"] > 0 and r["client_peak_rss_mb"] > 0
    assert (path / "rounds.csv").read_text().startswith("round,")
    assert (path / "clients.csv").is_file() and (path / "config.json").is_file()


def test_global_adapter_changed(run):
    """The saved global adapter differs from the initial adapter (and LoRA B is no longer zero)."""
    cfg, path = run
    initial = {k: v.numpy() for k, v in trainable_state(build_model(cfg, load_federation(cfg).catalog)).items()}
    final = read_adapter(path / "adapter.safetensors")
    assert final.keys() == initial.keys()
    assert any(not np.array_equal(final[k], initial[k]) for k in final)
    assert any(np.abs(v).sum() > 0 for k, v in final.items() if "lora_B" in k)


def test_ndcg_beats_random_ranker(run):
    """Final NDCG@10 is above the expected NDCG@10 of a random ranking of the same candidates."""
    cfg, path = run
    fed = load_federation(cfg)
    evaluated = [s for s in fed.splits if s.evaluated]
    expected = np.mean([random_ndcg(len(fed.catalog), len(s.train_items)) for s in evaluated])
    final = json.loads((path / "rounds.json").read_text())[-1]
    assert final["eval_ndcg@10"] > 1.5 * expected
