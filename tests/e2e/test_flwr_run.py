"""`flwr run .` works: the same ServerApp/ClientApp through Flower's managed local SuperLink."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())


def _stop_started(flwr_home: Path) -> None:
    """Kill the SuperLink daemon `flwr run` left behind (found by our private FLWR_HOME) and its children."""
    mine = [p for p in psutil.process_iter(["cmdline"]) if str(flwr_home) in " ".join(p.info["cmdline"] or [])]
    for proc in mine:
        for child in proc.children(recursive=True):
            child.send_signal(signal.SIGKILL)
        proc.send_signal(signal.SIGKILL)
    psutil.wait_procs(mine, timeout=10)


_NO_FLWR = pytest.mark.skipif(shutil.which("flwr", path=str(Path(sys.executable).parent)) is None,
                              reason="flwr CLI not installed beside this interpreter")


def _flwr_run(tmp_path: Path, *options: str, timeout: float = 600) -> tuple[Path, str]:
    """`flwr run ROOT --stream *options` from `tmp_path` with a private FLWR_HOME: (the one run directory under
    tmp_path/runs, the log). The SuperLink daemon it leaves behind is stopped."""
    flwr_home = tmp_path / "flwr_home"
    env = {**os.environ, "FLWR_HOME": str(flwr_home), "FLWR_TELEMETRY_ENABLED": "0",
           "FLWR_DISABLE_UPDATE_CHECK": "1", "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
           "RAY_USAGE_STATS_ENABLED": "0", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    try:
        out = subprocess.run(["flwr", "run", str(ROOT), "--stream", *options], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=timeout)
    finally:
        _stop_started(flwr_home)
    log = out.stdout + out.stderr
    # run directories only: under a privacy setting runs/private/ holds the server-private rows
    runs = sorted(p for p in (tmp_path / "runs").glob("*") if p.is_dir() and p.name != "private") \
        if (tmp_path / "runs").is_dir() else []
    assert len(runs) == 1, log[-3000:]
    return runs[0], log


@_NO_FLWR
def test_flwr_run_on_the_defaults(tmp_path):
    """`flwr run .` with nothing else: Flower's default federation (2 SuperNodes), fedrec's pyproject config as it
    is. The embedded synthetic data is sized to the 2 nodes; every round releases; the results say so (flwr's exit
    code would say 0 either way)."""
    run, log = _flwr_run(tmp_path)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed", log[-3000:]
    assert summary["rounds"] == {"planned": 20, "run": 20, "released": 20, "failed": 0}
    config = json.loads((run / "config.json").read_text())
    assert config["population"] == 2 and config["config"]["data"]["source"] == "synthetic:users=2,items=600"
    assert summary["evaluation"]["users"] == 2 and (run / "model" / "adapter_model.safetensors").is_file()


@_NO_FLWR
def test_flwr_run_sizes_the_synthetic_data_to_the_supernodes(tmp_path):
    """12 SuperNodes, no data override: 12 synthetic users, one per node; 2 rounds that aggregate and evaluate."""
    run, log = _flwr_run(tmp_path, "--federation-config", "num-supernodes=12 client-resources-num-cpus=1",
                         "--run-config", "run.rounds=2 run.clients_per_round=3 eval.every=2")
    rounds = json.loads((run / "rounds.json").read_text())
    assert [r["status"] for r in rounds] == ["ok", "ok"], log[-3000:]
    assert all(r["updates"] == 3 for r in rounds)
    assert rounds[-1]["eval_users"] == 12
    assert json.loads((run / "config.json").read_text())["population"] == 12


@_NO_FLWR
def test_flwr_run_whose_rounds_all_fail_reads_as_failed(tmp_path):
    """Every device declines (a record-level budget no round fits): flwr still exits 0, but summary.json says
    `failed`, nothing was released and no model was exported."""
    run, log = _flwr_run(tmp_path, "--federation-config", "num-supernodes=3 client-resources-num-cpus=1",
                         "--run-config", "run.rounds=2 run.clients_per_round=3 record_dp.enabled=true "
                                         "record_dp.epsilon_max=0.001")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "failed", log[-3000:]
    assert summary["rounds"]["released"] == 0 and summary["export"] is None
    assert all(r["status"] == "failed" and r["declined"] == 3 for r in json.loads((run / "rounds.json").read_text()))
