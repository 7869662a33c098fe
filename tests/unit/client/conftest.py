"""Deployed devices in one process: a public catalog, history files and a run config for three devices."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from fedrec.shared.config import RunConfig
from fedrec.shared.data.synthetic import make_synthetic
from fedrec.shared.data.types import Catalog, UserHistory
from fedrec.shared.run_dir import write_catalog

USERS = 3


def write_history(path: Path, catalog: Catalog, users: list[UserHistory]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["user", "item", "weight"])
        for u in users:
            w.writerows([u.user_id, catalog.item_ids[int(i)], float(x)] for i, x in zip(u.items, u.weights,
                                                                                          strict=True))
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir: Path) -> dict:
    """A public catalog.json, three devices' history files (the third holds two users) and a run config."""
    root = tmp_path_factory.mktemp("deployed")
    ds = make_synthetic(num_users=USERS + 1, num_items=40, seed=2)
    write_catalog(root / "public", ds.catalog)
    files = [write_history(root / f"history-{i}.csv", ds.catalog, [ds.users[i]]) for i in range(USERS - 1)]
    files.append(write_history(root / "shared-history.csv", ds.catalog, ds.users[USERS - 1:]))  # two users
    nodes = [{"data-path": str(f), "state-dir": str(root / f"device-{i}")} for i, f in enumerate(files)]
    nodes[0]["device-id"] = "alice-phone"
    nodes[-1]["user"] = ds.users[USERS - 1].user_id
    cfg = RunConfig.from_mapping({"model.name": str(tiny_llama_dir),
                                  "data.source": str(root / "public" / "catalog.json"), "run.deployment_nodes": USERS,
                                  "run.rounds": 2, "run.clients_per_round": USERS, "eval.every": 1,
                                  "record_dp.enabled": True, "secagg.enabled": True, "user_dp.enabled": True,
                                  "run.client_sampling": "poisson", "user_dp.clip_norm": 0.5, "user_dp.delta": 1e-3,
                                  "train.bias_learning_rate": 0.5, "record_dp.accountant": "rdp",
                                  "record_dp.expected_batch": 8, "model.history_tokens": 32,
                                  "run.dir": str(root / "runs"), "run.name": "deployed"})  # small: 2 DP steps a round
    return {"root": root, "catalog": ds.catalog, "nodes": nodes, "cfg": cfg, "users": ds.users}
