"""End to end with both guarantees on: a Flower simulation with on-device DP-SGD and DP-FedAvg, then an audit."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from fedrec.cli.main import app
from fedrec.shared.config import RunConfig
from fedrec.shared.privacy.ledger import PrivacyLedger
from fedrec.shared.run_dir import private_dir
from fedrec.simulations.simulate import simulate


@pytest.fixture(scope="module")
def dp_run(tmp_path_factory):
    # 8 users, q = 8/8: every device is asked in both rounds. One round of DP-SGD costs about 4.2 on every device
    # (q = 4/16 over the 16 fixed slots, 4 steps), so with record-epsilon-max = 5 every device trains in round 1
    # and declines in round 2. Secure aggregation is on (the default with user_dp), so round 2, with no device
    # sending keys, is aborted and releases nothing (a plain round would have released noise only).
    cfg = RunConfig.from_mapping({"data.source": "synthetic:users=8,items=60,seed=5", "run.rounds": 2,
                                  "hybrid.releases": "",  # adapter rounds only: the release phase has its own tests
                                  "run.clients_per_round": 8, "eval.every": 2, "run.client_sampling": "poisson",
                                  "user_dp.enabled": True, "user_dp.noise_multiplier": 1.0, "user_dp.clip_norm": 0.5,
                                  "record_dp.enabled": True, "record_dp.epsilon_max": 5.0,
                                  "train.bias_learning_rate": 0.5, "run.dir": str(tmp_path_factory.mktemp("runs")),
                                  "run.name": "dp"})
    return cfg, simulate(cfg, num_cpus=2)


def test_devices_decline_over_budget_and_the_server_goes_on(dp_run):
    """Round 1 securely aggregates every device; in round 2 every device declines, the secure round has no one to
    sum and releases nothing, and the server goes on (it still evaluates)."""
    cfg, run = dp_run
    assert cfg.secagg.mode == "auto" and cfg.secagg.enabled  # the default with user_dp
    rounds = json.loads((run / "rounds.json").read_text())
    assert rounds[0]["status"] == "ok" and rounds[0]["updates"] == 8 and rounds[0]["declined"] == 0
    assert rounds[1]["declined"] == 8 and rounds[1]["updates"] == 0
    assert rounds[1]["status"].startswith("aborted: advertise-keys: 0 client(s) sent usable keys")
    assert "eval_ndcg@10" in rounds[1]
    clients = (private_dir(run) / "clients.csv").read_text()  # server-private under DP: who trained when
    assert clients.count("declined: device privacy budget") == 8 and not (run / "clients.csv").exists()


def test_user_level_ledger_has_one_release_per_round(dp_run):
    """Round 1 released (one Poisson-sampled Gaussian event); the aborted round 2 is not in the ledger (no release
    phase here: `hybrid.releases` is empty)."""
    _, run = dp_run
    ledger = PrivacyLedger.load(run / "ledger-user.json")
    assert ledger.rounds() == [1]


def test_run_report_verifies(dp_run):
    """`fedrec audit verify` passes on the run's signed report with the server's public key."""
    _, run = dp_run
    report = run / "privacy-report.json"
    assert report.is_file() and (run / "privacy-report.html").is_file() and (run / "privacy-report.md").is_file()
    result = CliRunner().invoke(app, ["audit", "verify", str(report), "--public-key",
                                      str(run / "server-ed25519.pub")], terminal_width=200)
    assert result.exit_code == 0, result.output
    doc = json.loads(report.read_text())
    assert doc["user_level"]["sampling"]["method"] == "poisson"
    assert doc["record_level_across_devices"] is not None


def test_every_device_writes_a_signed_report_that_verifies(dp_run):
    """Each simulated device keeps its state under <run.dir>/private/<run>/devices/partition-<i> (outside the
    published run directory: its ledger says when it trained): a record-level ledger of its one round and a report
    signed with its own key that `fedrec audit verify` passes."""
    _, run = dp_run
    assert not (run / "devices").exists()
    devices = sorted((private_dir(run) / "devices").iterdir())
    assert [d.name for d in devices] == [f"partition-{i}" for i in range(8)]
    for d in devices:
        assert PrivacyLedger.load(d / "record-ledger.json").rounds() == [1]
        result = CliRunner().invoke(app, ["audit", "verify", str(d / "privacy-report.json"), "--public-key",
                                          str(d / "device-ed25519.pem.pub")], terminal_width=200)
        assert result.exit_code == 0, result.output
