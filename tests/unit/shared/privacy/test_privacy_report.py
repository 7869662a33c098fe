"""Epsilon reports: built from ledgers, schema-validated on write and read, signed, rendered for people."""

from __future__ import annotations

import base64
import copy
import json
import stat
from pathlib import Path

import pytest

from fedrec.shared.privacy import keys
from fedrec.shared.privacy.errors import KeyFileError, ReportError, ReportSchemaError, SignatureError
from fedrec.shared.privacy.report import (
    Sampling,
    read_report,
    sign_report,
    signing_payload,
    validate_report,
    verify_signature,
    write_report,
)
from fedrec.shared.privacy.report.render import render_html, render_markdown, write_rendered
from fedrec.shared.privacy.report.schema import REPORT_SCHEMA

TOP_LEVEL = {"schema", "schema_version", "report_type", "run_id", "device_id", "created_at", "code_version", "scope",
             "user_level", "record_level", "record_level_across_devices", "signature"}


def test_run_report_states_both_guarantees_separately(run_report):
    # Assert
    assert set(run_report) == TOP_LEVEL
    g = run_report["user_level"]
    assert run_report["record_level"] is None
    assert g["statement"].startswith(f"User-level (ε = {g['accounting']['epsilon']:.5g}, δ = 2e-05)")
    assert "privacy unit: one user" in g["statement"] and "Not covered:" in g["statement"]
    assert g["composition"] == {"rounds_run": 8, "releases": 7, "rounds_without_release": [5], "local_steps": None,
                                "failed_rounds_policy": g["composition"]["failed_rounds_policy"]}
    assert g["accounting"]["accountant"] == "rdp" and g["accounting"]["cross_check"][0]["accountant"] == "pld"
    assert g["accounting"]["cross_check"][0]["epsilon"] < g["accounting"]["epsilon"]  # PLD is tighter
    assert [p["round"] for p in g["epsilon_by_round"]["points"]] == [1, 2, 3, 4, 6, 7, 8]
    assert g["epsilon_by_round"]["points"][-1]["epsilon"] == pytest.approx(g["accounting"]["epsilon"])
    across = run_report["record_level_across_devices"]
    assert across["epsilon"] == {"min": 0.8, "median": pytest.approx(1.0), "p90": 2.5, "max": 2.5}
    assert "not a user's whole history" in across["statement"]


def test_device_report_is_record_level_with_the_opacus_figure(device_report):
    g = device_report["record_level"]
    assert device_report["user_level"] is None and device_report["device_id"] == "device-7"
    assert g["privacy_unit"]["unit"] == "record"
    assert "This is not a user-level guarantee" in g["statement"]
    assert g["accounting"]["accountant"] == "opacus-prv"
    assert {c["accountant"] for c in g["accounting"]["cross_check"]} == {"rdp", "pld"}
    assert g["composition"]["local_steps"] == 58 and g["composition"]["rounds_run"] == 3
    assert g["accounting"]["library_versions"]["opacus"]


def test_write_then_read_round_trips_and_validates(run_report, tmp_path: Path):
    path = write_report(run_report, tmp_path / "report.json")
    assert read_report(path) == run_report
    verify_signature(read_report(path))


@pytest.mark.parametrize("mutate, field", [
    (lambda r: r["user_level"]["accounting"].pop("delta"), "report.user_level.accounting.delta"),
    (lambda r: r["user_level"]["accounting"].update(delta="1e-5"), "report.user_level.accounting.delta"),
    (lambda r: r["user_level"]["sampling"].update(population=0), "report.user_level.sampling.population"),
    (lambda r: r["user_level"]["mechanism"].update(noise_multiplier=True),
     "report.user_level.mechanism.noise_multiplier"),
    (lambda r: r.pop("scope"), "report.scope"),
    (lambda r: r.update(colour="blue"), "report.colour"),
    (lambda r: r["user_level"]["ledger"]["entries"][2].update(round="3"),
     "report.user_level.ledger.entries[2].round"),
    (lambda r: r.update(report_type="device"), "report.device_id"),
    (lambda r: r["user_level"]["privacy_unit"].update(unit="record"), "report.user_level.privacy_unit.unit"),
    (lambda r: r.update(user_level="yes"), "report.user_level"),
])
def test_schema_violations_are_rejected_on_read_naming_the_field(run_report, tmp_path: Path, mutate, field):
    # Prepare
    mutate(run_report)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(run_report))
    # Execute
    with pytest.raises(ReportSchemaError) as info:
        read_report(path)
    # Assert
    assert info.value.field == field
    assert field in str(info.value)


def test_write_refuses_an_invalid_report(run_report, tmp_path: Path):
    run_report["user_level"]["accounting"]["epsilon"] = -1.0
    with pytest.raises(ReportSchemaError, match=r"accounting\.epsilon: expected a number >= 0"):
        write_report(run_report, tmp_path / "r.json")
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize("text, needle", [
    ('{"a": NaN}', "NaN"),
    ('{"a": 1, "a": 2}', "duplicate key 'a'"),
    ("{not json", "not valid JSON"),
])
def test_read_is_strict_json(tmp_path: Path, text, needle):
    path = tmp_path / "r.json"
    path.write_text(text)
    with pytest.raises(ReportSchemaError, match=needle):
        read_report(path)


def test_a_newer_schema_version_is_refused_with_advice(run_report):
    run_report["schema_version"] = 2
    with pytest.raises(ReportSchemaError, match="upgrade fedrec"):
        validate_report(run_report)


def test_schema_is_standard_json_schema_and_agrees_with_our_validator(run_report, device_report):
    """Any JSON Schema tool can validate a report (jsonschema is only present here as a test helper)."""
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(REPORT_SCHEMA)
    jsonschema.Draft202012Validator.check_schema(REPORT_SCHEMA)
    assert not list(validator.iter_errors(run_report)) and not list(validator.iter_errors(device_report))
    run_report["user_level"]["accounting"]["delta"] = "1e-5"
    assert list(validator.iter_errors(run_report))


def test_signature_verifies_with_the_right_key_only(run_report, server_key, device_key):
    assert verify_signature(run_report, server_key.public_key()) == keys.fingerprint(server_key)
    with pytest.raises(SignatureError, match="expected SHA256:"):
        verify_signature(run_report, device_key.public_key())


def test_a_key_swap_is_caught(run_report, device_key):
    """Re-signing with another key passes only without a pinned key, and then names the (wrong) signer."""
    forged = sign_report(run_report, device_key)
    assert verify_signature(forged) == keys.fingerprint(device_key)
    forged["signature"]["key_fingerprint"] = run_report["signature"]["key_fingerprint"]
    with pytest.raises(SignatureError, match="key_fingerprint"):
        verify_signature(forged)


def test_any_change_after_signing_breaks_the_signature(run_report):
    run_report["user_level"]["accounting"]["epsilon"] *= 0.5
    with pytest.raises(SignatureError, match="changed after signing"):
        verify_signature(run_report)
    run_report["signature"] = None
    with pytest.raises(SignatureError, match="not signed"):
        verify_signature(run_report)


def test_signing_payload_is_canonical(run_report):
    """Key order and whitespace don't matter; the signature block is excluded."""
    shuffled = json.loads(json.dumps(run_report, indent=3), object_pairs_hook=lambda p: dict(reversed(p)))
    assert signing_payload(shuffled) == signing_payload(run_report)
    assert b"signature" not in signing_payload({"signature": {"x": 1}, "a": 1})
    assert b" " not in signing_payload({"a": [1, 2], "b": {"c": 0.1}})


def test_key_files(tmp_path: Path):
    # Prepare / Execute
    key = keys.load_or_create_private_key(tmp_path / "server.key")
    # Assert
    assert stat.S_IMODE((tmp_path / "server.key").stat().st_mode) == 0o600
    assert keys.load_private_key(tmp_path / "server.key").private_bytes_raw() == key.private_bytes_raw()
    pub = keys.load_public_key(tmp_path / "server.key.pub")
    assert keys.fingerprint(pub) == keys.fingerprint(key) and keys.fingerprint(key).startswith("SHA256:")
    assert keys.load_or_create_private_key(tmp_path / "server.key").private_bytes_raw() == key.private_bytes_raw()
    keys.save_private_key(key, tmp_path / "locked.key", password=b"pw")
    assert keys.load_private_key(tmp_path / "locked.key", password=b"pw").private_bytes_raw() == \
        key.private_bytes_raw()
    (tmp_path / "junk.pem").write_text("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    with pytest.raises(KeyFileError, match="junk.pem"):
        keys.load_public_key(tmp_path / "junk.pem")


def test_builder_refuses_a_report_that_would_fail_its_audit(build_run):
    """delta must be < 1/N: with N = 2000 users, delta = 1e-3 is refused when building, naming the check."""
    with pytest.raises(ReportError, match=r"user_level\.delta\.population"):
        build_run(delta=1e-3)
    with pytest.raises(ReportError, match=r"user_level\.sampling\.declared"):
        build_run(sampling=Sampling.no_amplification(population=2000))
    with pytest.raises(ReportError, match=r"user_level\.ledger\.rounds"):
        build_run(rounds_without_release=())


def test_builder_refuses_a_ledger_of_the_other_guarantee(build_run, ledgers):
    with pytest.raises(ReportError, match="expected a user-level ledger"):
        build_run(ledger=ledgers.device())


def test_markdown_and_html_show_statement_ledger_and_plot(run_report, device_report, tmp_path: Path):
    # Execute
    md = render_markdown(run_report, plot_href="p.png")
    page = render_html(device_report)
    paths = write_rendered(run_report, tmp_path, stem="run")
    # Assert
    assert run_report["user_level"]["statement"] in md.replace("\\|", "|")
    assert "| round | kind | z | q | count | metadata |" in md and "![epsilon over rounds](p.png)" in md
    assert md.count("| user-level release |") == 7
    assert "This is not a user-level guarantee" in page and page.count("<tr><td>") >= 3
    png = base64.b64decode(page.split("data:image/png;base64,")[1].split('"')[0])
    assert png.startswith(b"\x89PNG")
    assert set(paths) == {"md", "html", "png"} and paths["png"].read_bytes().startswith(b"\x89PNG")


def test_html_escapes_report_strings(run_report):
    evil = copy.deepcopy(run_report)
    evil["scope"]["dp_setting"] = "<script>alert(1)</script>"
    page = render_html(evil)
    assert "<script>" not in page and "&lt;script&gt;" in page


def test_a_run_without_user_level_dp_says_so(build_run, server_key):
    from fedrec.shared.privacy.report import Scope, build_run_report
    from fedrec.shared.privacy.report.render import statements

    report = build_run_report(run_id="r", scope=Scope(dp_setting="local DP-SGD only"), user_level=None,
                              record_level_epsilons=[1.0], record_level_delta=1e-5,
                              record_level_accountant="opacus-prv")
    assert statements(sign_report(report, server_key))[0].startswith("No user-level guarantee")


@pytest.mark.parametrize("accountant", ["pld", "rdp"])
def test_the_curve_uses_the_headline_accountant_and_ends_at_the_headline(build_run, accountant):
    """One accountant per figure: the epsilon-over-rounds curve is drawn with the headline's accountant (not RDP
    under a PLD headline), ends at the reported epsilon, and the plot's axis names that accountant."""
    from fedrec.shared.privacy.report.render import plot_epsilon_png

    report = build_run(accountant=accountant, cross_check=("rdp" if accountant == "pld" else "pld",))
    g = report["user_level"]
    assert g["epsilon_by_round"]["accountant"] == accountant
    assert g["epsilon_by_round"]["points"][-1]["epsilon"] == pytest.approx(g["accounting"]["epsilon"], rel=1e-6)
    labels: list[str] = []
    from matplotlib.axes import Axes

    original = Axes.set_ylabel
    try:
        Axes.set_ylabel = lambda self, text, *a, **k: labels.append(text) or original(self, text, *a, **k)
        assert plot_epsilon_png(report).startswith(b"\x89PNG")
    finally:
        Axes.set_ylabel = original
    assert labels == [f"ε (upper bound, {accountant} accountant)"]


def test_verify_flags_a_curve_drawn_with_another_accountant(run_report):
    """A report whose curve uses another accountant than its headline gets a warning (two figures for one run);
    a curve that does not end at the headline fails."""
    from fedrec.shared.privacy.report.consistency import consistency_findings

    run_report["user_level"]["epsilon_by_round"]["accountant"] = "pld"
    found = {f.check: f for f in consistency_findings(run_report)}
    assert found["user_level.epsilon_by_round.accountant"].status == "warn"
    run_report["user_level"]["epsilon_by_round"]["accountant"] = "rdp"
    run_report["user_level"]["epsilon_by_round"]["points"][-1]["epsilon"] *= 0.9
    found = {f.check: f for f in consistency_findings(run_report)}
    assert found["user_level.epsilon_by_round.accountant"].status == "fail"
