"""The run report's optional empirical audit: schema, statement, `fedrec audit verify` (fails loudly when a measured
lower bound exceeds the claimed epsilon), `fedrec audit show` and the renderings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fedrec.cli.main import app
from fedrec.shared.privacy import GuaranteeInputs, Mechanism, PrivacyLedger, Sampling, Scope, build_run_report, keys
from fedrec.shared.privacy.accountants import make_accountant
from fedrec.shared.privacy.empirical import epsilon_lower_bound
from fedrec.shared.privacy.errors import ReportError, ReportSchemaError
from fedrec.shared.privacy.report import empirical_statement, sign_report, validate_report, write_report
from fedrec.shared.privacy.report.render import render_html, render_markdown
from fedrec.shared.privacy.report.verify import verify_report

runner = CliRunner()
DELTA_USER = 1e-4


def _user_inputs() -> GuaranteeInputs:
    ledger = PrivacyLedger(guarantee="user-level", subject="run-audit")
    for r in (1, 2, 3):
        ledger.record_user_level_release(round=r, noise_multiplier=1.0, sample_rate=0.01, clip_norm=1.0,
                                         clients_aggregated=10)
    return GuaranteeInputs(ledger=ledger, mechanism=Mechanism.dp_fedavg(noise_multiplier=1.0, clip_norm=1.0,
                                                                        rng="test generator"),
                           sampling=Sampling.poisson(population=1000, sample_rate=0.01, evidence="test"),
                           delta=DELTA_USER, rounds_run=3)


def _user_epsilon() -> float:
    inputs = _user_inputs()
    return make_accountant("pld", adjacency=inputs.ledger.adjacency).epsilon(inputs.ledger.events(), delta=DELTA_USER)


def _audit(level: str, *, m: int, r: int, v: int, claimed: float | None, delta: float,
           estimate: float | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "level": level, "method": "one-run audit (Steinke et al. 2023): test", "canary": "test canary",
        "score": "test score", "canaries": m, "included": m // 2, "inclusion_probability": 0.5,
        "guesses_in": r // 2, "guesses_out": r - r // 2, "guesses": r, "correct": v, "confidence": 0.95,
        "delta": delta, "epsilon_lower_bound": epsilon_lower_bound(m=m, r=r, v=v, delta=delta),
        "claimed_epsilon": claimed, "claimed_source": "test", "audit_seconds": 1.5}
    if estimate is not None:
        entry["estimate"] = {"method": "Andrew et al. 2024: test", "inserted": m // 2, "dimension": 10_000,
                             "mean": 0.01, "std": 0.01, "null_std": 0.01, "delta": delta, "epsilon": estimate}
    return entry


def _report(*audits: dict[str, Any]) -> dict[str, Any]:
    return build_run_report(run_id="run-audit", scope=Scope(dp_setting="central DP-FedAvg, server adds the noise"),
                            user_level=_user_inputs(), record_level_epsilons=[0.8, 2.5], record_level_delta=1e-5,
                            record_level_accountant="opacus-prv",
                            empirical_audit={"confidence": 0.95, "audits": list(audits)})


def _verify(report: dict[str, Any], tmp_path: Path, pub: Path) -> tuple[int, dict[str, dict], str]:
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report))
    as_json = runner.invoke(app, ["audit", "verify", str(path), "--json", "--public-key", str(pub)])
    text = runner.invoke(app, ["audit", "verify", str(path), "--public-key", str(pub)], terminal_width=200)
    assert as_json.exit_code == text.exit_code, (as_json.output, text.output)
    return as_json.exit_code, {f["check"]: f for f in json.loads(as_json.output)}, text.output


@pytest.fixture
def pub(tmp_path: Path, server_key) -> Path:
    return keys.save_public_key(server_key, tmp_path / "server.pub")


def test_bounds_below_the_claims_verify(server_key, pub: Path, tmp_path: Path) -> None:
    """A signed report whose measured lower bounds sit below the claimed epsilons passes every check."""
    # Prepare
    user_eps = _user_epsilon()
    report = sign_report(_report(
        _audit("record-level", m=200, r=40, v=30, claimed=2.5, delta=1e-5),
        _audit("user-level", m=100, r=20, v=11, claimed=user_eps, delta=DELTA_USER, estimate=0.05)), server_key)
    # Execute
    code, findings, _ = _verify(report, tmp_path, pub)
    # Assert
    assert code == 0, {k: f for k, f in findings.items() if f["status"] == "fail"}
    for check in ("empirical_audit.statement", "empirical_audit.record_level.consistency",
                  "empirical_audit.record_level.recompute", "empirical_audit.record_level.below_claimed",
                  "empirical_audit.user_level.consistency", "empirical_audit.user_level.below_claimed",
                  "empirical_audit.user_level.estimate"):
        assert findings[check]["status"] == "pass", findings[check]
    statement = report["empirical_audit"]["statement"]
    assert "record-level: ε ≥" in statement and f"the claimed ε is {user_eps:.5g}" in statement


def test_a_lower_bound_above_the_claim_fails_loudly(server_key, pub: Path, tmp_path: Path) -> None:
    """100 of 100 guesses right on 200 canaries proves eps >= 3.47 (95%); claiming 1.0 is a privacy bug: exit 1."""
    # Prepare: the report itself is consistent (it is built), only the comparison fails
    audit = _audit("record-level", m=200, r=100, v=100, claimed=1.0, delta=1e-5)
    assert audit["epsilon_lower_bound"] > 3.4
    report = sign_report(_report(audit), server_key)
    # Execute
    code, findings, text = _verify(report, tmp_path, pub)
    # Assert
    assert code == 1
    failed = {c for c, f in findings.items() if f["status"] == "fail"}
    assert failed == {"empirical_audit.record_level.below_claimed"}
    assert "PRIVACY BUG" in findings["empirical_audit.record_level.below_claimed"]["message"]
    assert "FAILED" in text and "empirical_audit.record_level.below_claimed" in text


def test_a_tampered_bound_is_recomputed(server_key, pub: Path, tmp_path: Path) -> None:
    """Lowering the reported bound (and its statement, then re-signing) is caught: the counts give another bound."""
    # Prepare
    report = _report(_audit("record-level", m=200, r=100, v=100, claimed=2.5, delta=1e-5))
    report["empirical_audit"]["audits"][0]["epsilon_lower_bound"] = 0.5
    report["empirical_audit"]["statement"] = empirical_statement(report["empirical_audit"])
    # Execute
    code, findings, _ = _verify(sign_report(report, server_key), tmp_path, pub)
    # Assert
    assert code == 1 and findings["empirical_audit.record_level.recompute"]["status"] == "fail"


def test_the_user_level_claim_must_be_the_reports_epsilon() -> None:
    """The claimed user-level epsilon beside the bound is the report's own figure; another one is refused."""
    with pytest.raises(ReportError, match=r"empirical_audit.user_level.consistency"):
        _report(_audit("user-level", m=100, r=20, v=10, claimed=_user_epsilon() / 2, delta=DELTA_USER))


def test_an_estimate_above_the_claim_is_only_a_warning(server_key, pub: Path, tmp_path: Path) -> None:
    """The one-shot estimate is not a bound: above the claim it warns, it does not fail."""
    report = sign_report(_report(_audit("user-level", m=100, r=20, v=10, claimed=_user_epsilon(),
                                        delta=DELTA_USER, estimate=50.0)), server_key)
    code, findings, _ = _verify(report, tmp_path, pub)
    assert code == 0 and findings["empirical_audit.user_level.estimate"]["status"] == "warn"


def test_without_a_claim_the_comparison_is_skipped(server_key, pub: Path, tmp_path: Path) -> None:
    """record-dp off: there is no record-level epsilon to compare with; the bound is shown, nothing fails."""
    report = sign_report(_report(_audit("record-level", m=200, r=100, v=100, claimed=None, delta=1e-5)),
                         server_key)
    code, findings, _ = _verify(report, tmp_path, pub)
    assert code == 0 and findings["empirical_audit.record_level.below_claimed"]["status"] == "skip"
    assert "no record-level epsilon is claimed" in report["empirical_audit"]["statement"]


def test_schema_rules() -> None:
    """Unknown audit fields and audits in device reports are refused; reports without an audit are unchanged."""
    report = _report(_audit("record-level", m=50, r=10, v=5, claimed=1.0, delta=1e-5))
    bad = json.loads(json.dumps(report))
    bad["empirical_audit"]["audits"][0]["colour"] = "red"
    with pytest.raises(ReportSchemaError, match=r"report.empirical_audit.audits\[0\].colour: unknown field"):
        validate_report(bad)
    bad = json.loads(json.dumps(report))
    bad["empirical_audit"]["audits"][0]["level"] = "device-level"
    with pytest.raises(ReportSchemaError, match=r"audits\[0\].level"):
        validate_report(bad)
    device = {**report, "report_type": "device", "device_id": "d", "user_level": None,
              "record_level": report["user_level"], "record_level_across_devices": None}
    with pytest.raises(ReportSchemaError, match=r"report.empirical_audit: only run reports"):
        validate_report(device)
    plain = build_run_report(run_id="r", scope=Scope(dp_setting="x"), user_level=_user_inputs())
    assert "empirical_audit" not in plain


def test_show_and_render_put_the_bound_beside_the_claim(server_key, tmp_path: Path) -> None:
    """`fedrec audit show`, the Markdown and the HTML each list the measured lower bound next to the claimed ε."""
    # Prepare
    report = sign_report(_report(_audit("record-level", m=200, r=40, v=30, claimed=2.5, delta=1e-5)), server_key)
    path = write_report(report, tmp_path / "r.json")
    bound = f"{report['empirical_audit']['audits'][0]['epsilon_lower_bound']:.4g}"
    # Execute
    shown = runner.invoke(app, ["audit", "show", str(path)], terminal_width=250)
    markdown, html = render_markdown(report), render_html(report)
    # Assert
    assert shown.exit_code == 0, shown.output
    assert "empirical audit" in shown.output and bound in shown.output and "2.5" in shown.output
    assert "## Empirical audit" in markdown and f"| {bound} | 2.5 |" in markdown
    assert "<h2>Empirical audit" in html and f"<td>{bound}</td><td>2.5</td>" in html
    assert report["empirical_audit"]["statement"] in markdown.replace("> ", "")
    assert verify_report(report, public_key=None)  # parses through the library entry point too
