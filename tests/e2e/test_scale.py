"""What a worker pays per client message: nothing loaded twice, and evaluation that does not dominate.

Issue 7's speed target rests on two properties checked here (timings themselves live in
`simulations/bench_scale.py` and `simulations/results/scale.md`, never in asserts):
- a process loads the data set, the backbone and the catalog table once and reuses them for every client message
  it serves (the real ClientApp over the in-process engine: every message goes through the same handler);
- intermediate evaluations cover a sample of users, the final one every user.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedrec.shared.config import RunConfig
from fedrec.shared.data.federation import load_federation
from fedrec.simulations.simulate import simulate


def _counting(monkeypatch: pytest.MonkeyPatch, module, name: str, calls: list[str]) -> None:
    real = getattr(module, name)

    def wrapper(*args, **kwargs):
        calls.append(name)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)


def test_a_process_loads_data_backbone_and_catalog_table_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             tiny_llama_dir: Path) -> None:
    """3 rounds x 4 clients + evaluations in one process: one data load, one backbone load, one table encoding."""
    # Prepare: settings no other test uses, so no per-process cache is warm
    import fedrec.shared.data.federation as federation_data
    import fedrec.shared.model.build as build

    calls: list[str] = []
    _counting(monkeypatch, federation_data, "load_dataset", calls)
    _counting(monkeypatch, build, "load_backbone", calls)
    _counting(monkeypatch, build, "catalog_embeddings", calls)
    cfg = RunConfig.from_mapping({"data.source": "synthetic:users=10,items=30,seed=77",
                                  "model.name": str(tiny_llama_dir), "model.lora_rank": 3, "run.rounds": 3,
                                  "run.clients_per_round": 4, "eval.every": 1, "run.dir": str(tmp_path)})
    # Execute
    run = simulate(cfg, engine="inprocess")
    # Assert
    rounds = json.loads((run / "rounds.json").read_text())
    assert [r["updates"] for r in rounds] == [4, 4, 4]
    assert sorted(calls) == ["catalog_embeddings", "load_backbone", "load_dataset"]


def test_intermediate_evaluations_sample_users_and_the_final_one_covers_all(tmp_path: Path,
                                                                            tiny_llama_dir: Path) -> None:
    """fraction-evaluate 0.25 every round, fraction-evaluate-final 1: rounds 1-2 rank 3 users, round 3 all."""
    # Prepare
    cfg = RunConfig.from_mapping({"data.source": "synthetic:users=12,items=40,seed=5",
                                  "model.name": str(tiny_llama_dir), "run.rounds": 3, "run.clients_per_round": 3,
                                  "eval.every": 1, "eval.fraction": 0.25, "run.dir": str(tmp_path)})
    evaluable = sum(s.evaluated for s in load_federation(cfg).splits)
    # Execute
    run = simulate(cfg, engine="inprocess")
    # Assert
    rounds = json.loads((run / "rounds.json").read_text())
    assert [int(r["eval_users"]) for r in rounds] == [3, 3, evaluable]
    assert evaluable > 3
