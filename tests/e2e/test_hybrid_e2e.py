"""The hybrid recommender end to end through `fedrec simulate`: the release phase under user-level DP and secure
aggregation, one adapter round on its share of the budget, the signed report declaring every release, the
summary, the export and `fedrec recommend` on the released statistics."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from fedrec.cli.main import app
from fedrec.shared.privacy.ledger import PrivacyLedger
from fedrec.shared.run_dir import RELEASED, read_released

runner = CliRunner()


@pytest.fixture(scope="module")
def hybrid_run(tiny_llama_dir, tmp_path_factory):
    parent = tmp_path_factory.mktemp("runs")
    args = ["simulate", "--data", "synthetic:users=10,items=60,seed=5", "--model", str(tiny_llama_dir), "--rounds",
            "1", "--clients-per-round", "5", "--run-dir", str(parent), "--run-name", "hybrid", "--engine",
            "inprocess"]
    for kv in ("user_dp.enabled=true", "user_dp.target_epsilon=8", "run.client_sampling=poisson",
               "hybrid.releases=popularity,cooccurrence", "hybrid.gram_head=20", "hybrid.gram_k=5",
               "hybrid.shares=popularity:0.3,cooccurrence:0.5,adapter:0.2", "hybrid.weight_lora=0.5",
               "model.history_tokens=16", "train.examples_per_user=4"):
        args += ["--set", kv]
    result = runner.invoke(app, args, terminal_width=200)
    assert result.exit_code == 0, result.output
    return parent / "hybrid", result.output


def test_the_ledger_holds_each_release_then_the_adapter_round(hybrid_run):
    """Round 0: popularity and co-occurrence, each one unsampled Gaussian naming its release; round 1: the adapter."""
    run, output = hybrid_run
    ledger = PrivacyLedger.load(run / "ledger-user.json")
    assert [(e.round, e.metadata.get("release")) for e in ledger] == [(0, "popularity"), (0, "cooccurrence"),
                                                                        (1, "adapter")]
    assert "release popularity" in output and "round   0 (released statistics" in output


def test_the_report_declares_every_release_and_verifies(hybrid_run):
    """`audit verify` recomputes the composed epsilon (at most the target) and checks each release's declaration."""
    run, _ = hybrid_run
    report = json.loads((run / "privacy-report.json").read_text())
    assert [r["name"] for r in report["user_level"]["releases"]] == ["popularity", "cooccurrence"]
    assert report["user_level"]["accounting"]["epsilon"] <= 8.0 * 1.01
    result = runner.invoke(app, ["audit", "verify", str(run / "privacy-report.json"), "--public-key",
                                 str(run / "server-ed25519.pub"), "--json"], terminal_width=200)
    assert result.exit_code == 0, result.output
    findings = {f["check"]: f["status"] for f in json.loads(result.stdout)}
    assert findings["user_level.releases.declared"] == "pass"


def test_summary_export_and_recommend_use_the_released_statistics(hybrid_run, tmp_path):
    """summary.json lists the statistics; the export carries them; `fedrec recommend` ranks with them."""
    run, _ = hybrid_run
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["statistics"] == ["popularity", "cooccurrence"]
    assert (run / "model" / RELEASED).is_file()
    assert read_released(run / "model").keys() == read_released(run).keys()
    catalog = json.loads((run / "catalog.json").read_text())
    history = tmp_path / "h.csv"
    history.write_text("user,item\nme," + "\nme,".join(catalog["item_ids"][:3]) + "\n")
    result = runner.invoke(app, ["recommend", "--run", str(run / "model"), "--history", str(history), "--format",
                                 "json"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)["recommendations"]) == 10
