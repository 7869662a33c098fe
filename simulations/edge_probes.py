"""The edge benchmark's child processes: `fedrec recommend` and one device's DP round, each measured alone.

Peak RSS (`resource.getrusage`) covers a whole process's life, so each measurement runs in a fresh interpreter
that imports only what `fedrec recommend` / a device imports: then the figures are theirs, not the benchmark's.
The parent (`run_child`) re-runs `python -m fedrec.simulations.bench_edge --child KIND ...`, which calls
`run_probe`; the child prints its result as one JSON line. `SPAWNED` in the child's environment holds when the
parent started it, so interpreter start-up and imports count as `import_s`.
"""

from __future__ import annotations

import json
import os
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

SPAWNED = "FEDREC_BENCH_SPAWNED"  # time.time() when the parent started the child: interpreter + imports


def _rss_mb() -> tuple[float, float]:
    """(peak RSS, current RSS) of this process in MB. Linux reports ru_maxrss in KiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    current = 0.0
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            current = int(line.split()[1]) / 1024
    return peak, current


def child_recommend(run: Path, histories: Path, int8: bool) -> dict[str, Any]:
    """What `fedrec recommend [--int8]` does, timed: load the run's model, then recommend for each history."""
    import torch

    from fedrec.shared.data.types import UserHistory
    from fedrec.shared.model.recommend import load_trained, recommend

    t_import = time.time() - float(os.environ[SPAWNED])
    t1 = time.perf_counter()
    cfg, catalog, model = load_trained(run)
    t_load = time.perf_counter() - t1
    t_quant = 0.0
    if int8:
        from fedrec.shared.model.quantize import quantize_int8

        t2 = time.perf_counter()
        quantize_int8(model)
        t_quant = time.perf_counter() - t2
    peak_after_load, rss_after_load = _rss_mb()
    users = json.loads(histories.read_text())
    times, tops = [], {}
    for u in users:
        hist = UserHistory(u["user"], np.asarray(u["items"], dtype=np.int64), np.asarray(u["weights"]))
        t = time.perf_counter()
        recs = recommend(model, cfg, catalog, hist, top_k=10)
        times.append(time.perf_counter() - t)
        tops[u["user"]] = [r.item for r in recs]
    peak, rss = _rss_mb()
    return {"import_s": t_import, "load_s": t_load, "quantize_s": t_quant, "latency_s": times,
            "peak_rss_after_load_mb": peak_after_load, "rss_after_load_mb": rss_after_load, "peak_rss_mb": peak,
            "rss_mb": rss, "threads": torch.get_num_threads(), "top10": tops}


def child_train(run: Path, split_file: Path) -> dict[str, Any]:
    """One device's round with record-level DP: build the model, load the global adapter, DP-SGD, ledger entry."""
    import opacus  # noqa: F401 - imported here so that its import counts as start-up, not training
    import torch

    from fedrec.shared.config import RunConfig
    from fedrec.shared.data.split import UserSplit
    from fedrec.shared.model.build import build_model, set_global_state
    from fedrec.shared.model.recommender import trainable_state
    from fedrec.shared.protocol import state_bytes
    from fedrec.shared.run_dir import ADAPTER, read_adapter, read_catalog, read_config
    from fedrec.shared.train.dp_sgd import new_record_ledger, plan_round, train_local_private

    t_import = time.time() - float(os.environ[SPAWNED])
    cfg = RunConfig.from_mapping({**read_config(run).to_flat(), "record_dp.enabled": True,
                                  "run.aggregation_weights": "equal"})
    s = json.loads(split_file.read_text())
    split = UserSplit(s["user"], np.asarray(s["train_items"], dtype=np.int64), np.asarray(s["train_weights"]),
                      s["val_item"], s["test_item"])
    t1 = time.perf_counter()
    catalog = read_catalog(run)
    model = build_model(cfg, catalog)
    set_global_state(model, read_adapter(run / ADAPTER))
    t_load = time.perf_counter() - t1
    ledger = new_record_ledger(subject="bench-device")
    stats = train_local_private(model, split, catalog, cfg, seed=1, ledger=ledger, server_round=1)
    peak, rss = _rss_mb()
    plan = plan_round(cfg)
    return {"import_s": t_import, "load_s": t_load, "train_s": stats.seconds, "steps": stats.steps,
            "empty_steps": stats.empty_steps, "examples": stats.examples, "epsilon": stats.epsilon,
            "noise_multiplier": plan.noise_multiplier, "sample_rate": plan.sample_rate,
            "record_delta": cfg.record_dp.delta, "update_bytes": state_bytes(
                {k: v.numpy() for k, v in trainable_state(model).items()}),
            "peak_rss_mb": peak, "rss_mb": rss, "threads": torch.get_num_threads()}


def run_probe(kind: str, args: list[str]) -> dict[str, Any]:
    """In the child: the measurement `kind` ("recommend" RUN HISTORIES fp32|int8, or "train" RUN SPLIT)."""
    if kind == "recommend":
        return child_recommend(Path(args[0]), Path(args[1]), args[2] == "int8")
    if kind == "train":
        return child_train(Path(args[0]), Path(args[1]))
    raise SystemExit(f"unknown child {kind!r}")


def run_child(args: list[str]) -> dict[str, Any]:
    """In the parent: run one probe in a fresh interpreter and return the JSON line it printed last."""
    cmd = [sys.executable, "-m", "fedrec.simulations.bench_edge", "--child", *args]
    env = {**os.environ, SPAWNED: str(time.time())}
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])
