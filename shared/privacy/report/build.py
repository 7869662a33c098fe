"""Building a run report (server) or a device report: the envelope, each guarantee section, the summary of the
devices' record-level figures and the optional empirical audit.

Epsilon is always computed here from the ledger, never passed in, so a report can't state a number its own
ledger does not support; `fedrec audit verify` recomputes it independently. By default (`strict=True`) a
builder also runs the verifier's consistency checks (`consistency`) and refuses a report that would fail them.
"""

from __future__ import annotations

import math
import platform
import statistics
import subprocess
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fedrec.shared.io import package_version
from fedrec.shared.privacy.accountants import ACCOUNTANTS, make_accountant
from fedrec.shared.privacy.errors import ReportError
from fedrec.shared.privacy.events import gaussian_components
from fedrec.shared.privacy.ledger import LOCAL_DPSGD, RECORD_LEVEL, USER_LEVEL
from fedrec.shared.privacy.report.consistency import consistency_findings
from fedrec.shared.privacy.report.document import validate_report
from fedrec.shared.privacy.report.inputs import GuaranteeInputs, Scope
from fedrec.shared.privacy.report.lifetime import curve_point, has_runs, run_summaries
from fedrec.shared.privacy.report.schema import SCHEMA_NAME, SCHEMA_VERSION
from fedrec.shared.privacy.report.statements import (
    RECORD_BOUND,
    RECORD_LEVEL_FAILED_ROUNDS_POLICY,
    RECORD_UNIT,
    USER_BOUND,
    USER_LEVEL_FAILED_ROUNDS_POLICY,
    USER_UNIT,
    across_devices_statement,
    empirical_statement,
    guarantee_statement,
)


def build_run_report(*, run_id: str, scope: Scope, user_level: GuaranteeInputs | None,
                     record_level_epsilons: Sequence[float] = (), record_level_delta: float | None = None,
                     record_level_accountant: str | None = None, created_at: datetime | None = None,
                     code_version: Mapping[str, Any] | None = None, strict: bool = True,
                     empirical_audit: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The server's report: the user-level guarantee (or None: "no user-level guarantee") and a summary of
    the record-level epsilons the devices reported (at `record_level_delta`, from `record_level_accountant`).

    `empirical_audit` (optional; `fedrec.server.empirical_audit`): ``{"confidence", "audits": [...]}``, the epsilon
    measured on canaries in this run beside the claimed one; its plain-words statement is generated here.

    With `strict`, the report's consistency checks (those of `fedrec audit verify` that need no recomputation)
    run before returning, and a failure raises `ReportError`: a report that would fail its audit is a bug.
    """
    report = _envelope("run", run_id=run_id, device_id=None, scope=scope, created_at=created_at,
                       code_version=code_version)
    report["user_level"] = None if user_level is None else _guarantee(USER_LEVEL, user_level, report["scope"])
    report["record_level"] = None
    report["record_level_across_devices"] = _across_devices(record_level_epsilons, record_level_delta,
                                                            record_level_accountant)
    if empirical_audit is not None:  # optional: only reports of audited runs have it
        section = {**empirical_audit, "audits": [dict(a) for a in empirical_audit["audits"]]}
        report["empirical_audit"] = {**section, "statement": empirical_statement(section)}
    return _finish(report, strict=strict)


def build_device_report(*, run_id: str, device_id: str, scope: Scope, record_level: GuaranteeInputs,
                        created_at: datetime | None = None, code_version: Mapping[str, Any] | None = None,
                        strict: bool = True) -> dict[str, Any]:
    """One device's report: its record-level guarantee over every round it trained in (with a lifetime ledger:
    in every run, listed in the section's ``runs``; `run_id` is then the current run)."""
    report = _envelope("device", run_id=run_id, device_id=device_id, scope=scope, created_at=created_at,
                       code_version=code_version)
    report["user_level"] = None
    report["record_level"] = _guarantee(RECORD_LEVEL, record_level, report["scope"])
    report["record_level_across_devices"] = None
    return _finish(report, strict=strict)


def current_code_version() -> dict[str, Any]:
    """fedrec's version and, when running from a git checkout, its commit (read-only `git rev-parse`)."""
    commit = None
    try:
        proc = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                              capture_output=True, text=True, timeout=5, check=False)
        if proc.returncode == 0 and proc.stdout.strip():
            commit = proc.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return {"fedrec": package_version("fedrec"), "git_commit": commit}


def _envelope(report_type: str, *, run_id: str, device_id: str | None, scope: Scope,
              created_at: datetime | None, code_version: Mapping[str, Any] | None) -> dict[str, Any]:
    when = created_at or datetime.now(UTC)
    if when.tzinfo is None:
        raise ReportError("created_at: expected a timezone-aware datetime, found a naive one")
    return {"schema": SCHEMA_NAME, "schema_version": SCHEMA_VERSION, "report_type": report_type,
            "run_id": run_id, "device_id": device_id,
            "created_at": when.isoformat(timespec="seconds").replace("+00:00", "Z"),
            "code_version": dict(code_version) if code_version is not None else current_code_version(),
            "scope": scope.to_json(report_type), "signature": None}


def _guarantee(level: str, g: GuaranteeInputs, scope: dict[str, Any]) -> dict[str, Any]:
    ledger = g.ledger
    if ledger.guarantee != level:
        raise ReportError(f"{_section(level)}: expected a {level} ledger, found a {ledger.guarantee} one")
    if not len(ledger):
        raise ReportError(f"{_section(level)}: the ledger is empty; report no guarantee (None) instead")
    events = ledger.events()
    primary = make_accountant(g.accountant, adjacency=ledger.adjacency, settings=g.accountant_settings)
    epsilon = primary.epsilon(events, delta=g.delta)
    if not math.isfinite(epsilon):
        raise ReportError(f"{_section(level)}: epsilon is infinite (a release without noise); "
                          f"report this guarantee as absent instead")
    cross = []
    for name in g.cross_check:
        if name != g.accountant:
            acc = make_accountant(name, adjacency=ledger.adjacency)
            cross.append({"accountant": name, "accountant_settings": acc.settings(),
                          "epsilon": acc.epsilon(events, delta=g.delta)})
    # The epsilon-over-rounds curve uses the headline's accountant and settings: one accountant per figure, so
    # the curve ends at the reported epsilon instead of showing a second number for the same run.
    keys = ledger.round_keys()  # (run, round): a device's lifetime ledger spans runs
    batches = [[e.event for e in ledger if (e.run, e.round) == k] for k in keys]
    points = [curve_point(k, e) for k, e in zip(keys, primary.cumulative_epsilons(batches, delta=g.delta),
                                                 strict=True)]
    libraries = {"fedrec": package_version("fedrec"), "dp-accounting": package_version("dp-accounting"),
                 "python": platform.python_version()}
    for name in [g.accountant, *g.cross_check]:
        lib = ACCOUNTANTS[name].library
        libraries[lib] = package_version(lib)
    if level == RECORD_LEVEL:
        libraries["opacus"] = package_version("opacus")
    # DP-SGD steps only: a device's own noisy releases (LOCAL_RELEASE entries) are releases, not steps
    steps = (sum(c.count for e in ledger if e.kind == LOCAL_DPSGD for c in gaussian_components(e.event))
             if level == RECORD_LEVEL else None)
    section = {
        "statement": "",
        "privacy_unit": {"unit": "user" if level == USER_LEVEL else "record",
                         "description": g.unit_description or (USER_UNIT if level == USER_LEVEL else RECORD_UNIT),
                         "contribution_bound": g.contribution_bound
                         or (USER_BOUND if level == USER_LEVEL else RECORD_BOUND)},
        "adjacency": ledger.adjacency,
        "mechanism": g.mechanism.to_json(),
        "sampling": g.sampling.to_json(),
        "composition": {
            "rounds_run": int(g.rounds_run), "releases": len(ledger),
            "rounds_without_release": sorted(int(r) for r in g.rounds_without_release),
            "local_steps": steps,
            "failed_rounds_policy": g.failed_rounds_policy or (
                USER_LEVEL_FAILED_ROUNDS_POLICY if level == USER_LEVEL else RECORD_LEVEL_FAILED_ROUNDS_POLICY)},
        "accounting": {"accountant": g.accountant, "accountant_settings": primary.settings(), "delta": g.delta,
                       "epsilon": epsilon, "epsilon_is_upper_bound": True, "cross_check": cross,
                       "library_versions": libraries},
        "epsilon_by_round": {"accountant": g.accountant, "accountant_settings": primary.settings(),
                             "points": points},
        "ledger": ledger.to_json(),
    }
    if g.releases:  # optional: only runs with a release phase have it (older reports stay byte-identical)
        section["releases"] = [r.to_json() for r in g.releases]
    if has_runs(ledger):  # a device's lifetime: the runs it trained in (optional field, `lifetime`)
        section["runs"] = run_summaries(ledger, points)
    section["statement"] = guarantee_statement(level, section, scope)
    return section


def _across_devices(epsilons: Sequence[float], delta: float | None, accountant: str | None) -> dict[str, Any] | None:
    values = sorted(float(e) for e in epsilons)
    if not values:
        return None
    if delta is None or accountant is None:
        raise ReportError("record_level_across_devices: record_level_delta and record_level_accountant are "
                          "required when record_level_epsilons are given")
    if not all(math.isfinite(v) and v >= 0 for v in values):
        raise ReportError(f"record_level_epsilons: expected finite numbers >= 0, found {values!r}")
    p90 = values[max(0, math.ceil(0.9 * len(values)) - 1)]  # nearest-rank percentile
    block = {"statement": "",
             "source": "self-reported by the devices (each device's own signed report holds its ledger); "
                       "not recomputed by the server",
             "devices": len(values), "delta": float(delta), "accountant": accountant,
             "epsilon": {"min": values[0], "median": float(statistics.median(values)), "p90": p90,
                         "max": values[-1]}}
    block["statement"] = across_devices_statement(block)
    return block


def _finish(report: dict[str, Any], *, strict: bool) -> dict[str, Any]:
    validate_report(report)
    if strict:
        failed = [f for f in consistency_findings(report) if f.status == "fail"]
        if failed:
            raise ReportError("the report would fail its audit: " + "; ".join(f"{f.check}: {f.message}"
                                                                               for f in failed))
    return report


def _section(level: str) -> str:
    return "user_level" if level == USER_LEVEL else "record_level"
