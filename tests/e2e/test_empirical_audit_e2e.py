"""The empirical audit inside a federated run (the real ServerApp loop and ClientApp, single-process engine, tiny
decoder): without DP the attack has power; with DP at a small claimed epsilon the measured bound stays below it,
the signed report carries both and verifies; canaries never reach the evaluation."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedrec.cli.main import app
from fedrec.shared.config import RunConfig
from fedrec.shared.data.federation import load_federation
from fedrec.simulations.simulate import simulate

runner = CliRunner()


@pytest.fixture(scope="module")
def no_dp_run(tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir: Path) -> tuple[RunConfig, Path]:
    # 32 users, every one trains in both rounds; a sparse catalog, so a random canary target is rarely a real
    # user's artist. 32 record canaries (one per device) and 32 canary clients, guessing on a quarter each way:
    # 16 guesses per audit, so all-correct proves eps >= 1.58 at 95%. Canary clients' norm S = 5 stands out
    # among the unclipped user updates of the small model (the null cosine std is 1/sqrt(d), d ~ 5,000).
    cfg = RunConfig.from_mapping({"model.name": str(tiny_llama_dir),
                                  "data.source": "synthetic:users=32,items=2000,seed=3", "run.rounds": 2,
                                  "run.clients_per_round": 64, "eval.every": 2, "audit.canaries": 32,
                                  "audit.canary_clients": 32, "audit.guess_fraction": 0.25, "audit.seed": 7,
                                  "user_dp.clip_norm": 5.0, "user_dp.delta": 1e-5,
                                  "run.dir": str(tmp_path_factory.mktemp("runs")), "run.name": "audit-no-dp"})
    return cfg, simulate(cfg, engine="inprocess")


def _audits(run: Path) -> dict[str, dict]:
    return {a["level"]: a for a in json.loads((run / "audit" / "results.json").read_text())["audits"]}


def test_without_dp_both_audits_find_the_canaries(no_dp_run) -> None:
    """The attack has power: with no DP, both the record-level and the user-level bounds are clearly positive."""
    _, run = no_dp_run
    audits = _audits(run)
    for level in ("record-level", "user-level"):
        a = audits[level]
        assert a["claimed_epsilon"] is None and a["guesses"] == 16
        assert a["correct"] >= 15 and a["epsilon_lower_bound"] > 1.0, a
    truth = json.loads((run / "audit" / "canaries.json").read_text())
    assert len(truth["record_canaries"]) == 32 and len(truth["canary_clients"]) == 32
    assert len({c["host_node"] for c in truth["record_canaries"]}) == 32  # one canary per device
    assert not (run / "privacy-report.json").exists()  # nothing is claimed without DP


def test_canaries_are_excluded_from_the_evaluation(no_dp_run) -> None:
    """Only the 32 users' devices are evaluated (never a canary client), and the figures count only users."""
    cfg, run = no_dp_run
    truth = json.loads((run / "audit" / "canaries.json").read_text())
    canary_nodes = {str(c["node"]) for c in truth["canary_clients"]}
    rows = list(csv.DictReader((run / "clients.csv").open()))
    evaluated = {r["node"] for r in rows if r["phase"] == "evaluate"}
    trained = {r["node"] for r in rows if r["phase"] == "train"}
    last = json.loads((run / "rounds.json").read_text())[-1]
    assert canary_nodes <= trained and not canary_nodes & evaluated and len(evaluated) == 32
    assert last["eval_users"] == sum(s.evaluated for s in load_federation(cfg).splits)
    assert last["updates"] == 64 and last["train_loss"] == last["train_loss"]  # canaries send no loss (no NaN)


@pytest.fixture(scope="module")
def dp_run(tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir: Path) -> tuple[Path, str]:
    # Through `fedrec simulate --audit-canaries --audit-canary-clients`, on the single-process engine. Both
    # guarantees on, each at a claimed epsilon of about 1 (z = 3; Poisson sampling q = 1/2 over 48 clients).
    parent = tmp_path_factory.mktemp("runs")
    args = ["simulate", "--data", "synthetic:users=24,items=1000,seed=5", "--model", str(tiny_llama_dir),
            "--rounds", "2", "--clients-per-round", "24", "--run-dir", str(parent), "--run-name", "audit-dp",
            "--audit-canaries", "24", "--audit-canary-clients", "24"]
    for kv in ("eval.every=2", "audit.guess_fraction=0.25", "user_dp.delta=1e-5", "record_dp.enabled=true",
               "record_dp.noise_multiplier=3.0", "record_dp.accountant=rdp", "user_dp.enabled=true",
               "user_dp.noise_multiplier=3.0", "run.client_sampling=poisson"):
        args += ["--set", kv]
    result = runner.invoke(app, args + ["--engine", "inprocess"], terminal_width=200)
    assert result.exit_code == 0, result.output
    return parent / "audit-dp", result.output


def test_with_dp_the_bounds_stay_below_the_claims(dp_run) -> None:
    """At a small claimed epsilon the measured lower bounds do not exceed it (a correct implementation)."""
    run, output = dp_run
    for level, a in _audits(run).items():
        assert a["claimed_epsilon"] is not None and 0 < a["claimed_epsilon"] < 3, (level, a)
        assert a["epsilon_lower_bound"] <= a["claimed_epsilon"], (level, a)
    assert "audit           record-level: measured ε >=" in output  # the run summary shows both


def test_the_signed_report_carries_the_audit_and_verifies(dp_run) -> None:
    """`fedrec audit verify` passes, including bound <= claim; `fedrec audit show` lists both figures."""
    run, _ = dp_run
    report = run / "privacy-report.json"
    doc = json.loads(report.read_text())
    assert [a["level"] for a in doc["empirical_audit"]["audits"]] == ["record-level", "user-level"]
    assert doc["empirical_audit"]["audits"][1]["claimed_epsilon"] == doc["user_level"]["accounting"]["epsilon"]
    verified = runner.invoke(app, ["audit", "verify", str(report), "--public-key", str(run / "server-ed25519.pub"),
                                   "--json"])
    findings = {f["check"]: f["status"] for f in json.loads(verified.output)}
    assert verified.exit_code == 0, verified.output
    assert findings["empirical_audit.record_level.below_claimed"] == "pass"
    assert findings["empirical_audit.user_level.below_claimed"] == "pass"
    shown = runner.invoke(app, ["audit", "show", str(report)], terminal_width=250)
    assert shown.exit_code == 0 and "empirical audit" in shown.output and "claimed ε" in shown.output
