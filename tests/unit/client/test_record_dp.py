"""A device's record-level budget is a lifetime budget: two consecutive runs with the same state directories
continue each device's ledger, and a device whose lifetime budget is spent declines the next run's rounds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedrec.cli.main import app as cli
from fedrec.client import client_app
from fedrec.server.federation import run_federation
from fedrec.shared.config import RunConfig
from fedrec.shared.privacy.ledger import PrivacyLedger
from fedrec.shared.train.dp_sgd import new_record_ledger, plan_round, record_epsilon
from fedrec.simulations.inprocess import InProcessGrid

RUNS, ROUNDS, SPENT = ("spring", "summer"), 2, 2  # device 2 can afford ROUNDS rounds in its whole life


def _lifetime_epsilon(cfg: RunConfig, rounds: int) -> float:
    """Epsilon after `rounds` rounds, recomputed from the settings alone (what a device's ledger must say)."""
    ledger = new_record_ledger(subject="recomputed")
    for r in range(rounds):
        ledger.append(round=r + 1, run="any", event=plan_round(cfg).event())
    return record_epsilon(ledger, cfg)


@pytest.fixture(scope="module")
def two_runs(world: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("lifetime")
    cfg = world["cfg"].updated({"secagg.enabled": False, "run.dir": str(root / "runs"), "run.rounds": ROUNDS})
    nodes = [{**n, "state-dir": str(root / f"device-{i}")} for i, n in enumerate(world["nodes"])]
    budget = (_lifetime_epsilon(cfg, SPENT) + _lifetime_epsilon(cfg, SPENT + 1)) / 2
    nodes[SPENT]["record-epsilon-max"] = budget  # the device's own lifetime budget: one run's rounds, not two
    runs = [run_federation(InProcessGrid(client_app.app, len(nodes), node_configs=nodes),
                           cfg.updated({"run.name": name})) for name in RUNS]
    return {"cfg": cfg, "nodes": nodes, "runs": runs, "budget": budget}


def test_the_second_run_continues_each_devices_lifetime_ledger(two_runs: dict) -> None:
    """Both runs' rounds in one ledger per device, keyed by (run, round); the lifetime epsilon equals a
    recomputation from the settings; the signed report lists both runs and verifies."""
    cfg = two_runs["cfg"]
    for node in two_runs["nodes"][:SPENT]:
        d = Path(node["state-dir"])
        ledger = PrivacyLedger.load(d / "record-ledger.json")
        assert ledger.round_keys() == [(run, r) for run in RUNS for r in range(1, ROUNDS + 1)]
        assert [e.event for e in ledger] == [plan_round(cfg).event()] * (len(RUNS) * ROUNDS)
        report = json.loads((d / "privacy-report.json").read_text())
        assert report["run_id"] == RUNS[-1] and [r["run_id"] for r in report["record_level"]["runs"]] == list(RUNS)
        assert report["record_level"]["accounting"]["epsilon"] == pytest.approx(
            _lifetime_epsilon(cfg, len(RUNS) * ROUNDS), rel=1e-9)
        result = CliRunner().invoke(cli, ["audit", "verify", str(d / "privacy-report.json"), "--public-key",
                                          str(d / "device-ed25519.pem.pub")], terminal_width=200)
        assert result.exit_code == 0, result.output


def test_a_device_whose_lifetime_budget_is_spent_declines_and_the_server_counts_it(two_runs: dict) -> None:
    """Device 2 trained every round of the first run; in the second every round would pass its lifetime budget,
    so it declines (not a failure), its ledger is not charged, and rounds.json counts the declines."""
    spent = Path(two_runs["nodes"][SPENT]["state-dir"])
    ledger = PrivacyLedger.load(spent / "record-ledger.json")
    assert ledger.round_keys() == [(RUNS[0], r) for r in range(1, ROUNDS + 1)]
    assert record_epsilon(ledger, two_runs["cfg"]) <= two_runs["budget"]
    first, second = (json.loads((run / "rounds.json").read_text()) for run in two_runs["runs"])
    assert [r["declined"] for r in first] == [0] * ROUNDS and [r["declined"] for r in second] == [1] * ROUNDS
    assert all(r["status"] == "ok" and r["updates"] == len(two_runs["nodes"]) - 1 for r in second)
