"""The edge benchmark's in-process measurements: ranking quality, a SecAgg+ round's bytes, a run's own figures.

These run in the benchmark's own process because they measure the model or the protocol, not a device's memory:
full-ranking NDCG/HR of an adapter (float32 or int8), the bytes per device of one record-DP + SecAgg+ round
(`--secagg-clients` users, the in-process engine), and the bytes, round time and client RSS the adapter's run
recorded. `train_adapter` makes an adapter when none is given (5 rounds of 50 clients).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from fedrec.shared.config import RunConfig


def evaluate(model: Any, cfg: RunConfig, splits: list[Any], catalog: Any
             ) -> tuple[dict[str, float], list[np.ndarray], float]:
    """Full-ranking metrics over every evaluated user; also each user's top 10 and the seconds it took."""
    from fedrec.shared.metrics import RankingMetrics, topk_excluding
    from fedrec.shared.model.scoring import score_users

    evaluated = [s for s in splits if s.evaluated]
    total = RankingMetrics(num_items=len(catalog))
    rng = np.random.default_rng(0)
    tops = []
    t0 = time.perf_counter()
    for start in range(0, len(evaluated), 256):
        chunk = evaluated[start : start + 256]
        for s, row in zip(chunk, score_users(model, chunk, catalog, cfg), strict=True):
            total.add_scores(row, s.test_item, s.train_items, rng=rng)
            tops.append(topk_excluding(row, s.train_items, 10))
    return total.summary(), tops, time.perf_counter() - t0


def int8_quality(run: Path, data: str) -> dict[str, Any]:
    """NDCG@10/HR@10 of `run`'s adapter in float32 and in int8 (`fedrec recommend --int8`), and how many of each
    user's float32 top 10 the int8 top 10 keeps (overlap@10), over every evaluated user."""
    from fedrec.shared.config import RunConfig
    from fedrec.shared.data.federation import load_federation
    from fedrec.shared.model.quantize import quantize_int8
    from fedrec.shared.model.recommend import load_trained
    from fedrec.shared.run_dir import read_config

    cfg = RunConfig.from_mapping({**read_config(run).to_flat(), "data.source": data})
    splits = load_federation(cfg).splits
    _, catalog, model = load_trained(run)
    fp32, top_fp32, s_fp32 = evaluate(model, cfg, splits, catalog)
    summary = quantize_int8(model)
    int8, top_int8, s_int8 = evaluate(model, cfg, splits, catalog)
    overlap = np.array([len(set(a) & set(b)) for a, b in zip(top_fp32, top_int8, strict=True)])
    return {"run": str(run), "user_dp": cfg.user_dp.enabled, "record_dp": cfg.record_dp.enabled,
            "rounds": cfg.run.rounds, "clients_per_round": cfg.run.clients_per_round,
            "user_epsilon": cfg.user_dp.target_epsilon, "fp32": fp32, "int8": int8, "fp32_s": s_fp32,
            "int8_s": s_int8, "top10_overlap": float(overlap.mean()),
            "overlap_at_least_9": float((overlap >= 9).mean()),
            "overlap_min": int(overlap.min()), "users": len(overlap), "int8_layers": summary.layers,
            "float_mb": summary.float_bytes / 1e6, "int8_mb": summary.int8_bytes / 1e6, "engine": summary.engine,
            "kept_float": list(summary.kept_float)}


def secagg_round(data: str, clients: int, rundir: Path) -> dict[str, Any]:
    """One round, record DP + SecAgg+, `clients` users in process: bytes per device (all phases) and wall time."""
    from fedrec.shared.config import RunConfig
    from fedrec.simulations.simulate import simulate

    cfg = RunConfig.from_mapping({"data.source": data, "data.max_users": clients, "run.rounds": 1,
                                  "run.clients_per_round": clients, "eval.every": 1, "record_dp.enabled": True,
                                  "secagg.enabled": True, "run.aggregation_weights": "equal",
                                  "run.dir": str(rundir), "run.name": f"edge-secagg-{time.strftime('%H%M%S')}"})
    t0 = time.perf_counter()
    run = simulate(cfg, engine="inprocess")
    wall = time.perf_counter() - t0
    import csv

    from fedrec.shared.run_dir import clients_dir

    rows = list(csv.DictReader((clients_dir(run, cfg) / "clients.csv").open()))  # private under DP
    per_node: dict[str, list[int]] = {}  # node -> [down, up] over the training phases (train message + SecAgg+)
    eval_down = []
    for r in rows:
        if r["phase"].startswith("evaluate"):  # the evaluate message and, under DP, its secure sum's stages
            if r["phase"] == "evaluate":
                eval_down.append(int(float(r["bytes_down"] or 0)))
            continue
        acc = per_node.setdefault(r["node"], [0, 0])
        acc[0] += int(float(r["bytes_down"] or 0))
        acc[1] += int(float(r["bytes_up"] or 0))
    rounds = json.loads((run / "rounds.json").read_text())
    down = [v[0] for v in per_node.values()]
    up = [v[1] for v in per_node.values()]
    return {"run": str(run), "clients": len(per_node), "down_mean": float(np.mean(down)),
            "up_mean": float(np.mean(up)), "eval_down_mean": float(np.mean(eval_down)) if eval_down else 0.0,
            "phases": sorted({r["phase"] for r in rows}), "wall_s": wall, "status": rounds[0].get("status"),
            "round_wall_s": rounds[0].get("wall_seconds"), "train_s": rounds[0].get("train_seconds")}


def train_adapter(data: str, rundir: Path) -> Path:
    """A float32 adapter to measure: 5 in-process rounds of 50 clients on `data`, default settings."""
    from fedrec.shared.config import RunConfig
    from fedrec.simulations.simulate import simulate

    cfg = RunConfig.from_mapping({"data.source": data, "run.rounds": 5, "run.clients_per_round": 50,
                                  "eval.every": 5, "run.dir": str(rundir),
                                  "run.name": f"edge-adapter-{time.strftime('%Y%m%d-%H%M%S')}"})
    return simulate(cfg, engine="inprocess")


def rounds_bytes(run: Path) -> dict[str, Any] | None:
    """Bytes per client, round time and client RSS of the run's ok rounds (rounds.json); None without any."""
    rows = json.loads((run / "rounds.json").read_text()) if (run / "rounds.json").is_file() else []
    ok = [r for r in rows if r.get("status") == "ok"]
    if not ok:
        return None
    last = ok[-1]
    return {"down": last["bytes_down_per_client"], "up": last["bytes_up_per_client"],
            "client_peak_rss_mb": float(np.median([r["client_peak_rss_mb"] for r in ok])),
            "round_wall_s": float(np.median([r["wall_seconds"] for r in ok])), "clients": last["updates"]}
