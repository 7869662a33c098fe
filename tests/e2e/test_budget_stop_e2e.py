"""A run that stops at its user-level budget ends normally: final evaluation, summary, signed report, exit 0."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from fedrec.cli.main import app
from fedrec.shared.privacy.ledger import PrivacyLedger

runner = CliRunner()


def test_a_budget_stop_evaluates_summarises_and_exits_0(tiny_llama_dir, tmp_path) -> None:
    """6 users, Poisson q = 1/2, z = 0.7: three releases fit in epsilon_max = 12 (PLD at delta = 1e-6), the fourth
    would not, so the run stops before round 4; the current adapter still gets the final evaluation (every user,
    through one secure sum), the summary prints, the report verifies with 3 rounds run, and the exit code is 0."""
    args = ["simulate", "--data", "synthetic:users=6,items=60,seed=5", "--model", str(tiny_llama_dir), "--rounds", "4",
            "--clients-per-round", "3", "--run-dir", str(tmp_path), "--run-name", "budget", "--engine", "inprocess"]
    # secure aggregation off (explicitly): under it a round whose Poisson sample is below the SecAgg+ threshold
    # aborts and releases nothing, so how many rounds fit the budget would depend on the secret sample
    for kv in ("hybrid.releases=", "secagg.enabled=false", "user_dp.enabled=true", "run.client_sampling=poisson",
               "user_dp.noise_multiplier=0.7", "user_dp.epsilon_max=12", "eval.every=10", "model.history_tokens=16"):
        args += ["--set", kv]
    result = runner.invoke(app, args, terminal_width=200)
    assert result.exit_code == 0, result.output
    run = tmp_path / "budget"
    rounds = json.loads((run / "rounds.json").read_text())
    assert [r["round"] for r in rounds] == [1, 2, 3, 4] and rounds[-1]["status"] == "stopped: user-level budget"
    assert all(r["status"] in ("ok", "noise only") for r in rounds[:3])  # a Poisson sample may be empty
    assert rounds[-1]["eval_users"] == 6 and rounds[-1]["eval_secure"] == "SecAgg+ sum of 6 devices"
    text = " ".join(result.output.split())  # rich wraps long lines
    assert "3/4 adapter rounds released an update" in text
    assert "stopped: user-level budget before round 4 (a normal end)" in text
    assert (run / "summary.txt").is_file()
    assert PrivacyLedger.load(run / "ledger-user.json").rounds() == [1, 2, 3]
    report = json.loads((run / "privacy-report.json").read_text())
    assert report["user_level"]["composition"]["rounds_run"] == 3
    verified = runner.invoke(app, ["audit", "verify", str(run / "privacy-report.json"), "--public-key",
                                   str(run / "server-ed25519.pub")], terminal_width=200)
    assert verified.exit_code == 0, verified.output
