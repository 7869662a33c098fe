"""What the server receives, and what the published run directory holds, under each privacy setting.

A whole in-process run per setting, with a Grid that records every reply the server gets and one device whose
history is malformed (its error names a file and a line of the history). Under any privacy setting: no reply
carries a per-user metric, a top-10 list or per-client telemetry; the failed device's error is a code only; the
published run directory has no per-client rows and no device state; evaluation still gives figures (one secure
sum). Without a privacy setting the per-user path stays (the control).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

import fedrec.client.evaluation as evaluation_job
import fedrec.client.train as train_job
from fedrec.client.client_app import app as client_app
from fedrec.server.federation import run_federation
from fedrec.shared.config import RunConfig
from fedrec.shared.data.types import DataFormatError
from fedrec.shared.protocol import (
    CANARY_METRIC,
    DECLINED_METRIC,
    PARTITION_METRIC,
    RECORD_EPSILON_METRIC,
    device_error_reason,
)
from fedrec.shared.run_dir import private_dir
from fedrec.simulations.inprocess import InProcessGrid

SECRET_PATH, SECRET_LINE = "/home/alice/listening-history.csv", "alice,Secret Artist,1234"
ALLOWED_METRICS = {DECLINED_METRIC, RECORD_EPSILON_METRIC, CANARY_METRIC, PARTITION_METRIC}
SETTINGS = {
    # q = 10/10 (8 users and 2 canary clients): every device, the malformed one included, is asked every round
    "record+user DP": {"record_dp.enabled": True, "record_dp.delta": 1e-3, "user_dp.enabled": True,
                       "run.client_sampling": "poisson", "audit.canary_clients": 2, "run.clients_per_round": 10},
    "secure aggregation": {"secagg.enabled": True},
    "user DP + secure aggregation": {"user_dp.enabled": True, "secagg.enabled": True,
                                     "run.client_sampling": "poisson"},
}


class RecordingGrid(InProcessGrid):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.received: list[Any] = []

    def send_and_receive(self, messages, *, timeout=None):  # noqa: ANN001
        replies = list(super().send_and_receive(messages, timeout=timeout))
        self.received.extend(replies)
        return replies


def _run(tiny_llama_dir: Path, tmp_path: Path, monkeypatch, settings: dict) -> tuple[RecordingGrid, Path]:
    for job in (train_job, evaluation_job):  # partition 0's history is malformed
        original = job.read_setup

        def broken(msg, context, original=original):  # noqa: ANN001, ANN202
            if int(context.node_config["partition-id"]) == 0:
                raise DataFormatError(SECRET_PATH, f"expected user,item,weight, found {SECRET_LINE!r}", line=3)
            return original(msg, context)

        monkeypatch.setattr(job, "read_setup", broken)
    cfg = RunConfig.from_mapping({"data.source": "synthetic:users=8,items=60,seed=5", "model.name": str(tiny_llama_dir),
                                  "model.history_tokens": 16, "train.examples_per_user": 4, "run.rounds": 2,
                                  "run.clients_per_round": 8, "eval.every": 1, "run.dir": str(tmp_path),
                                  "run.name": "view", **settings})
    grid = RecordingGrid(client_app, 8 + cfg.audit.canary_clients)
    return grid, run_federation(grid, cfg)


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_under_a_privacy_setting_the_server_gets_no_per_user_figure_path_or_telemetry(
        tiny_llama_dir, tmp_path, monkeypatch, caplog, setting):
    with caplog.at_level(logging.ERROR, logger="fedrec.client"):
        grid, run = _run(tiny_llama_dir, tmp_path, monkeypatch, SETTINGS[setting])
    errors = [r for r in grid.received if r.has_error()]
    assert errors, "the malformed device should have failed"
    for reply in grid.received:
        if reply.has_error():
            assert reply.error.reason == device_error_reason("data")  # a code and its fixed text, nothing else
            continue
        metrics = set(reply.content.get("metrics") or {})
        assert metrics <= ALLOWED_METRICS, (reply.metadata.message_type, metrics)
        if reply.metadata.message_type == "evaluate":
            assert "metrics" not in reply.content  # keys only: the sums follow masked, inside the secure sum
    assert SECRET_PATH in caplog.text and SECRET_LINE in caplog.text  # the detail stays in the device's log
    published = {p.relative_to(run).as_posix() for p in run.rglob("*")}
    assert not {"clients.csv", "clients.json", "devices"} & published, published
    assert not any(SECRET_PATH in p.read_text(errors="replace") for p in run.rglob("*") if p.is_file()
                   and p.suffix in (".json", ".csv", ".md", ".txt", ".html"))
    private = private_dir(run)
    assert (private / "clients.csv").is_file() and "fedrec device error data" in (private / "clients.csv").read_text()
    rounds = json.loads((run / "rounds.json").read_text())
    assert all(r["failed"] == 1 for r in rounds)  # the malformed device, once per round
    assert all(r["eval_secure"] == "SecAgg+ sum of 7 devices" and r["eval_users"] >= 1 for r in rounds)
    assert all(r["client_peak_rss_mb"] != r["client_peak_rss_mb"] for r in rounds)  # NaN: no telemetry


def test_without_a_privacy_setting_the_per_user_path_stays(tiny_llama_dir, tmp_path, monkeypatch):
    """The control: per-user evaluation replies and telemetry in the clear, clients.csv in the run directory."""
    grid, run = _run(tiny_llama_dir, tmp_path, monkeypatch, {})
    evaluated = [r for r in grid.received if r.metadata.message_type == "evaluate" and not r.has_error()]
    assert evaluated and all("recommended" in r.content["metrics"] for r in evaluated)
    assert (run / "clients.csv").is_file() and not private_dir(run).joinpath("clients.csv").exists()
