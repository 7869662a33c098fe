"""`fedrec audit verify` passes a fresh report and fails, with a specific finding, on each kind of tampering.

Tampered reports are re-signed with the right key (except in the signature tests), so the failure shown is the
content check's, not just the signature's: a signer who lies is caught too.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedrec.cli.main import app
from fedrec.shared.privacy import keys
from fedrec.shared.privacy.accountants import RdpAccountant
from fedrec.shared.privacy.report import sign_report, write_report
from fedrec.shared.privacy.report.verify import verify_report

runner = CliRunner()


@pytest.fixture
def server_pub(tmp_path: Path, server_key) -> Path:
    return keys.save_public_key(server_key, tmp_path / "server.pub")


def _write(report: dict, tmp_path: Path, name: str = "report.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(report, indent=2))
    return path


def _verify(path: Path, pub: Path | None = None) -> tuple[int, dict[str, dict]]:
    args = ["audit", "verify", str(path), "--json"] + (["--public-key", str(pub)] if pub else [])
    result = runner.invoke(app, args)
    assert result.exit_code in (0, 1), result.output
    return result.exit_code, {f["check"]: f for f in json.loads(result.output)}


def _failed(findings: dict[str, dict]) -> set[str]:
    return {c for c, f in findings.items() if f["status"] == "fail"}


def test_a_fresh_run_report_passes(run_report, server_pub, tmp_path: Path):
    # Execute
    code, findings = _verify(write_report(run_report, tmp_path / "r.json"), server_pub)
    # Assert
    assert code == 0 and not _failed(findings)
    for check in ("signature", "schema", "user_level.epsilon.recompute", "user_level.epsilon.independent",
                  "user_level.epsilon.cross_check", "user_level.ledger.rounds", "user_level.mechanism.noise",
                  "user_level.sampling.declared", "user_level.delta.population", "user_level.epsilon.by_round",
                  "record_level_across_devices.consistency"):
        assert findings[check]["status"] == "pass", findings[check]
    assert "pld" in findings["user_level.epsilon.independent"]["message"]  # RDP report -> recomputed with PLD


def test_a_fresh_device_report_from_opacus_prv_passes(device_report, device_key, tmp_path: Path):
    pub = keys.save_public_key(device_key, tmp_path / "device.pub")
    code, findings = _verify(_write(device_report, tmp_path), pub)
    assert code == 0 and not _failed(findings)
    message = findings["record_level.epsilon.independent"]["message"]
    assert "rdp" in message and "pld" in message  # Opacus PRV -> recomputed with dp-accounting RDP and PLD


def test_without_a_public_key_the_signature_is_only_a_warning(run_report, tmp_path: Path):
    code, findings = _verify(_write(run_report, tmp_path))
    assert code == 0 and findings["signature"]["status"] == "warn"


def test_changed_epsilon_fails_recompute(run_report, server_key, server_pub, tmp_path: Path):
    run_report["user_level"]["accounting"]["epsilon"] = 0.5
    code, findings = _verify(_write(sign_report(run_report, server_key), tmp_path), server_pub)
    assert code == 1
    assert findings["user_level.epsilon.recompute"]["status"] == "fail"
    assert "0.5" in findings["user_level.epsilon.recompute"]["message"]
    assert findings["signature"]["status"] == "pass"


def test_changed_device_epsilon_fails_recompute_and_independent_check(device_report, device_key, tmp_path: Path):
    device_report["record_level"]["accounting"]["epsilon"] *= 0.5
    code, findings = _verify(_write(sign_report(device_report, device_key), tmp_path))
    assert code == 1
    assert {"record_level.epsilon.recompute", "record_level.epsilon.independent"} <= _failed(findings)


def test_removed_ledger_entry_fails_rounds(run_report, server_key, server_pub, tmp_path: Path):
    del run_report["user_level"]["ledger"]["entries"][3]  # round 4
    code, findings = _verify(_write(sign_report(run_report, server_key), tmp_path), server_pub)
    assert code == 1
    assert findings["user_level.ledger.rounds"]["status"] == "fail"
    assert "missing: [4]" in findings["user_level.ledger.rounds"]["message"]
    assert findings["user_level.epsilon.recompute"]["status"] == "fail"


def test_changed_noise_multiplier_fails_noise_check(run_report, server_key, server_pub, tmp_path: Path):
    run_report["user_level"]["mechanism"]["noise_multiplier"] = 2.0  # declared, but the ledger says 1.2
    code, findings = _verify(_write(sign_report(run_report, server_key), tmp_path), server_pub)
    assert code == 1
    assert findings["user_level.mechanism.noise"]["status"] == "fail"
    assert "[1.2]" in findings["user_level.mechanism.noise"]["message"]


def test_changed_noise_in_a_ledger_event_fails_noise_metadata_and_recompute(run_report, server_key, tmp_path: Path):
    run_report["user_level"]["ledger"]["entries"][0]["event"]["event"]["noise_multiplier"] = 5.0
    code, findings = _verify(_write(sign_report(run_report, server_key), tmp_path))
    assert code == 1
    assert {"user_level.mechanism.noise", "user_level.ledger.metadata",
            "user_level.epsilon.recompute"} <= _failed(findings)


def test_declared_sampling_rate_must_match_the_ledger(run_report, server_key, tmp_path: Path):
    run_report["user_level"]["sampling"].update(sample_rate=0.001, expected_sample_size=2.0)
    code, findings = _verify(_write(sign_report(run_report, server_key), tmp_path))
    assert code == 1 and "user_level.sampling.declared" in _failed(findings)


def test_delta_must_be_below_one_over_population(run_report, server_key, tmp_path: Path):
    run_report["user_level"]["sampling"].update(population=20000, expected_sample_size=200.0)
    run_report["user_level"]["accounting"]["delta"] = 1e-3  # also changes epsilon: recompute fails too
    code, findings = _verify(_write(sign_report(run_report, server_key), tmp_path))
    assert code == 1 and "user_level.delta.population" in _failed(findings)


@pytest.mark.parametrize(("delta", "status"), [(2e-5, "pass"), (2e-4, "warn"), (1e-3, "fail")])
def test_delta_against_the_population_passes_warns_or_fails(build_run, server_key, tmp_path: Path, delta, status):
    """N = 2000 users: delta <= 1/(10 N) = 5e-5 passes, up to 1/N = 5e-4 is a warning (weak), above fails."""
    report = sign_report(build_run(delta=delta), server_key) if status != "fail" else None
    if report is None:  # the builder refuses a report that would fail; tamper a valid one instead
        report = build_run()
        report["user_level"]["accounting"]["delta"] = delta
        report = sign_report(report, server_key)
    code, findings = _verify(_write(report, tmp_path))
    assert findings["user_level.delta.population"]["status"] == status, findings["user_level.delta.population"]
    assert code == (1 if status == "fail" else 0)


def test_statement_must_match_the_figures(run_report, server_key, tmp_path: Path):
    run_report["user_level"]["statement"] = run_report["user_level"]["statement"].replace("ε = ", "ε = 0.0")
    code, findings = _verify(_write(sign_report(run_report, server_key), tmp_path))
    assert code == 1 and _failed(findings) == {"user_level.statement"}


def test_bad_signature_fails(run_report, server_pub, tmp_path: Path):
    run_report["user_level"]["composition"]["rounds_run"] = 9  # changed without re-signing
    code, findings = _verify(_write(run_report, tmp_path), server_pub)
    assert code == 1
    assert "changed after signing" in findings["signature"]["message"]


def test_signature_by_another_key_fails(run_report, device_key, server_pub, tmp_path: Path):
    code, findings = _verify(_write(sign_report(run_report, device_key), tmp_path), server_pub)
    assert code == 1 and _failed(findings) == {"signature"}


def test_schema_violation_fails_and_names_the_field(run_report, server_key, server_pub, tmp_path: Path):
    run_report["user_level"]["accounting"]["delta"] = "1e-4"
    code, findings = _verify(_write(run_report, tmp_path), server_pub)  # sign_report refuses invalid reports
    assert code == 1
    assert findings["schema"]["status"] == "fail"
    assert "report.user_level.accounting.delta" in findings["schema"]["message"]


@pytest.mark.parametrize("as_json", [True, False])
def test_a_truncated_report_is_an_input_error_not_a_failed_check(run_report, tmp_path: Path, as_json: bool):
    """A report cut short (or not JSON at all) cannot be checked: exit 2, distinct from a failed check (exit 1)."""
    text = json.dumps(run_report, indent=2)
    path = tmp_path / "r.json"
    path.write_text(text[: len(text) // 2])
    result = runner.invoke(app, ["audit", "verify", str(path)] + (["--json"] if as_json else []),
                           terminal_width=200)
    assert result.exit_code == 2, result.output
    assert "not valid JSON" in (json.loads(result.output)["error"] if as_json else " ".join(result.output.split()))


def test_json_with_duplicate_keys_fails_schema(tmp_path: Path):
    """Parsable JSON that could show a reader another value than the verifier is a failed check (exit 1)."""
    path = tmp_path / "r.json"
    path.write_text('{"schema": "a", "schema": "b"}')
    code, findings = _verify(path)
    assert code == 1 and _failed(findings) == {"schema"} and "duplicate key" in findings["schema"]["message"]


def test_an_accountant_that_under_reports_is_caught_by_the_independent_one(run_report, server_key, monkeypatch):
    """If the producing accountant had a bug (here: RDP divided by 10), recomputing with the same one would
    agree; the independent PLD figure is what exposes it."""

    class BuggyRdp(RdpAccountant):
        name = "buggy-rdp"

        def _epsilon(self, events, delta):
            return super()._epsilon(events, delta) / 10

    from fedrec.shared.privacy.accountants import registry

    monkeypatch.setitem(registry.ACCOUNTANTS, "buggy-rdp", BuggyRdp)
    acc = run_report["user_level"]["accounting"]
    acc["accountant"] = "buggy-rdp"
    acc["epsilon"] /= 10
    # Execute
    findings = {f.check: f for f in verify_report(run_report)}
    # Assert
    assert findings["user_level.epsilon.recompute"].status == "pass"
    assert findings["user_level.epsilon.independent"].status == "fail"
    assert "not an upper bound" in findings["user_level.epsilon.independent"].message


def test_show_prints_statement_and_ledger(run_report, tmp_path: Path):
    result = runner.invoke(app, ["audit", "show", str(_write(run_report, tmp_path)), "--entries", "4"],
                           terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "User-level (ε =" in result.output and "Record-level, per device" in result.output
    assert "ledger: 7 releases, 4 shown" in result.output


def test_show_as_json_is_the_checked_report(run_report, tmp_path: Path):
    """`audit show --format json` prints the report itself (its schema: `fedrec schema report`), parseable."""
    result = runner.invoke(app, ["audit", "show", str(_write(run_report, tmp_path)), "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == json.loads(json.dumps(run_report))


def test_show_refuses_an_invalid_report(tmp_path: Path):
    result = runner.invoke(app, ["audit", "show", str(_write({"schema": "x"}, tmp_path))], terminal_width=200)
    assert result.exit_code == 2 and "report.schema" in result.output


def test_render_writes_markdown_html_and_png(device_report, tmp_path: Path):
    result = runner.invoke(app, ["audit", "render", str(_write(device_report, tmp_path, "dev.json")),
                                 "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["dev.html", "dev.md", "dev.png"]


def test_human_readable_verify_output_names_failed_checks(run_report, server_key, tmp_path: Path):
    run_report["user_level"]["accounting"]["epsilon"] = 0.5
    result = runner.invoke(app, ["audit", "verify", str(_write(sign_report(run_report, server_key), tmp_path))],
                           terminal_width=200)
    assert result.exit_code == 1
    assert "FAILED" in result.output and "user_level.epsilon.recompute" in result.output
