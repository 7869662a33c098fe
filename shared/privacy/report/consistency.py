"""The consistency checks of a report: does what it declares match what its own ledger records?

None of them recomputes epsilon, so they are cheap, and two places run them: the builders (`build`, in strict
mode) refuse to produce a report that fails one, and `verify` (`fedrec audit verify`) runs them on a report it
is given. Recomputing is `verify`'s alone: it hooks into the same walk over the report (`report_findings`), so
each section's recomputation findings follow its consistency findings, in one order whichever way the checks
run. The check ids and what each one means are listed in `verify`'s docstring.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from fedrec.shared.io import package_version
from fedrec.shared.privacy.distributed_entries import entry_components
from fedrec.shared.privacy.errors import LedgerError, UnsupportedMechanism
from fedrec.shared.privacy.ledger import LOCAL_RELEASE, RECORD_LEVEL, USER_LEVEL, PrivacyLedger
from fedrec.shared.privacy.report.lifetime import (
    format_keys,
    has_runs,
    runs_problems,
    runs_text,
)
from fedrec.shared.privacy.report.statements import across_devices_statement, empirical_statement, guarantee_statement

Status = Literal["pass", "fail", "warn", "skip"]


@dataclass(frozen=True)
class Finding:
    """One check's outcome: `check` is a stable id, `status` pass/fail/warn/skip, `message` the evidence."""

    check: str
    status: Status
    message: str

    @property
    def failed(self) -> bool:
        return self.status == "fail"

    def to_json(self) -> dict[str, str]:
        return asdict(self)


# verify's recomputations, run after a guarantee section's (name, its ledger, the section) or an empirical
# audit's (finding-id prefix, the audit) consistency findings; each returns the findings it adds.
SectionRecompute = Callable[[str, PrivacyLedger, Mapping[str, Any]], list[Finding]]
AuditRecompute = Callable[[str, Mapping[str, Any]], list[Finding]]


def consistency_findings(report: Mapping[str, Any]) -> list[Finding]:
    """The checks that need no recomputation (used when building a report, to refuse an inconsistent one)."""
    return report_findings(report)


def report_findings(report: Mapping[str, Any], *, recompute_section: SectionRecompute | None = None,
                    recompute_audit: AuditRecompute | None = None) -> list[Finding]:
    """Every consistency check of a validated report, section by section, with the recomputations hooked in."""
    out: list[Finding] = []
    for name, level in (("user_level", USER_LEVEL), ("record_level", RECORD_LEVEL)):
        if report.get(name) is not None:
            out.extend(_section_findings(name, level, report[name], report["scope"],
                                         recompute_section=recompute_section))
    across = report.get("record_level_across_devices")
    if across is not None:
        e = across["epsilon"]
        ordered = e["min"] <= e["median"] <= e["p90"] <= e["max"]
        out.append(Finding("record_level_across_devices.consistency", "pass" if ordered else "fail",
                           f"min {e['min']} <= median {e['median']} <= p90 {e['p90']} <= max {e['max']}"
                           if ordered else f"the summary is not ordered: {e}"))
        same = across["statement"] == across_devices_statement(across)
        out.append(_statement_finding("record_level_across_devices.statement", same))
    if report["report_type"] == "run" and report.get("user_level") is None:
        out.append(Finding("user_level", "warn", "no user-level guarantee in this run report"))
    if report.get("empirical_audit") is not None:
        out.extend(_empirical_findings(report, recompute_audit=recompute_audit))
    return out


def _empirical_findings(report: Mapping[str, Any], *, recompute_audit: AuditRecompute | None) -> list[Finding]:
    """The empirical audit: counts consistent, claimed epsilon = the report's; then `recompute_audit`, if any.

    The lower bound's recomputation and the check that it is below the claim are `verify`'s, never run when a
    report is built, so a failing audit is still written and can be shown.
    """
    section = report["empirical_audit"]
    out = [_statement_finding("empirical_audit.statement", section["statement"] == empirical_statement(section))]
    for a in section["audits"]:
        name = f"empirical_audit.{a['level'].replace('-', '_')}"
        claimed = a["claimed_epsilon"]
        problems = []
        if not (a["correct"] <= a["guesses"] == a["guesses_in"] + a["guesses_out"] <= a["canaries"]):
            problems.append(f"need correct {a['correct']} <= guesses {a['guesses']} = in {a['guesses_in']} + out "
                            f"{a['guesses_out']} <= canaries {a['canaries']}")
        if a["included"] > a["canaries"]:
            problems.append(f"{a['included']} canaries included out of {a['canaries']}")
        if a["level"] == "user-level":
            g = report.get("user_level")
            said = None if g is None else g["accounting"]["epsilon"]
            if (said is None) != (claimed is None) or (said is not None and not math.isclose(
                    claimed, said, rel_tol=1e-9, abs_tol=1e-12)):
                problems.append(f"claimed_epsilon {claimed} is not the report's user-level epsilon {said}")
        else:
            across = report.get("record_level_across_devices")
            if claimed is not None and across is not None and claimed > across["epsilon"]["max"] * (1 + 1e-9):
                problems.append(f"claimed_epsilon {claimed} is above the largest record-level epsilon any device "
                                f"reported ({across['epsilon']['max']})")
        out.append(Finding(f"{name}.consistency", "fail" if problems else "pass", "; ".join(problems) or
                           f"{a['correct']} of {a['guesses']} guesses correct on {a['canaries']} canaries "
                           f"({a['included']} included); claimed epsilon: {claimed} ({a['claimed_source']})"))
        if recompute_audit is not None and not problems:
            out.extend(recompute_audit(name, a))
    return out


def _section_findings(name: str, level: str, g: Mapping[str, Any], scope: Mapping[str, Any], *,
                      recompute_section: SectionRecompute | None) -> list[Finding]:
    def f(check: str, ok: bool | None, message: str) -> Finding:
        status: Status = "skip" if ok is None else ("pass" if ok else "fail")
        return Finding(f"{name}.{check}", status, message)

    try:
        ledger = PrivacyLedger.from_json(g["ledger"], where=f"{name}.ledger")
        # a distributed-DP entry's event is recomputed from its recorded parameters here (distributed_entries)
        components = [entry_components(e, where=f"{name}.ledger.entries[{i}]") for i, e in enumerate(ledger)]
    except (LedgerError, UnsupportedMechanism) as e:
        return [f("ledger.parse", False, f"{e} (other checks of this section skipped)")]
    keys = ledger.round_keys()
    out = [f("ledger.parse", True, f"{len(ledger)} {ledger.kind} entries, {format_keys(keys)}, adjacency "
                                   f"{ledger.adjacency}")]
    declared = {r["name"]: r for r in g.get("releases") or []}
    # entries of a declared round-0 release are checked against its declaration; the rest against the mechanism
    is_release = [e.kind == LOCAL_RELEASE or str(e.metadata.get("release", "")) in declared for e in ledger]
    flat = [c for comps, rel in zip(components, is_release, strict=True) if not rel for c in comps]
    last_run = ledger.runs()[-1] if has_runs(ledger) else None
    # what the declared mechanism and sampling describe: the last run's entries (all without runs), releases aside
    current = [c for e, comps, rel in zip(ledger, components, is_release, strict=True)
               if not rel and (last_run is None or e.run == last_run) for c in comps]
    mech, samp, comp, acc = g["mechanism"], g["sampling"], g["composition"], g["accounting"]

    # -- ledger vs composition
    problems = []
    if comp["releases"] != len(ledger):
        problems.append(f"composition.releases is {comp['releases']} but the ledger holds {len(ledger)} entries")
    rounds = ledger.rounds()
    if level == USER_LEVEL:
        skipped = set(comp["rounds_without_release"])
        expected = set(range(1, comp["rounds_run"] + 1)) - skipped
        if any(is_release):
            expected.add(0)
        if not skipped <= set(range(1, comp["rounds_run"] + 1)):
            problems.append(f"rounds_without_release {sorted(skipped)} are not all in 1..{comp['rounds_run']}")
        if set(rounds) != expected:
            missing, extra = sorted(expected - set(rounds)), sorted(set(rounds) - expected)
            problems.append(f"{comp['rounds_run']} rounds run, {len(skipped)} without release, so releases are "
                            f"expected in {len(expected)} rounds; ledger rounds missing: {missing or 'none'}, "
                            f"unexpected: {extra or 'none'}")
    else:
        if len(keys) != comp["rounds_run"]:
            problems.append(f"composition.rounds_run is {comp['rounds_run']} but the ledger has entries in "
                            f"{len(keys)} rounds ({format_keys(keys)})")
        steps = sum(c.count for c in flat)
        if comp["local_steps"] != steps:
            problems.append(f"composition.local_steps is {comp['local_steps']} but the ledger records {steps} steps")
    out.append(f("ledger.rounds", not problems, "; ".join(problems) or
                 f"{len(ledger)} releases in {len(keys)} rounds, as composition declares"))
    if has_runs(ledger) or "runs" in g:  # a device's lifetime: its runs as the ledger records them
        problems = runs_problems(ledger, g)
        out.append(f("ledger.runs", not problems, "; ".join(problems[:5]) or
                     f"{len(g['runs'])} runs listed as the ledger records them: {runs_text(g['runs'])}"))

    # -- metadata vs events
    bad = []
    for i, (entry, comps) in enumerate(zip(ledger, components, strict=True)):
        meta = entry.metadata
        if len(comps) != 1:
            continue
        z, q, count = comps[0]
        for key, value in (("noise_multiplier", z), ("sample_rate", q), ("steps", count)):
            if key == "steps" and level != RECORD_LEVEL:
                continue
            if key in meta and not _same(meta[key], value):
                bad.append(f"entries[{i}] (round {entry.round}) metadata {key}={meta[key]!r}, event has {value!r}")
    out.append(f("ledger.metadata", not bad, "; ".join(bad[:5]) + (f" (+{len(bad) - 5} more)" if len(bad) > 5
                                                                    else "") or "metadata matches every event"))

    # -- round-0 releases as declared
    if declared or any(is_release) or any(e.metadata.get("release") not in (None, "adapter") for e in ledger):
        out.append(f("releases.declared", *_release_check(ledger, components, declared)))

    # -- noise as configured (with runs: the current run's releases; earlier runs are checked by ledger.runs)
    zs = sorted({c.noise_multiplier for c in current})
    which = f"run {ledger.runs()[-1]!r}'s releases" if has_runs(ledger) else "the ledger's releases"
    ok = (bool(zs) or any(is_release)) and all(math.isclose(z, mech["noise_multiplier"], rel_tol=1e-12) for z in zs)
    out.append(f("mechanism.noise", ok, "no release of the declared mechanism (the round-0 statistics are checked "
                 "by releases.declared)" if ok and not zs else f"every release used z = {mech['noise_multiplier']}"
                 if ok and not has_runs(ledger) else f"{which} used z = {mech['noise_multiplier']}" if ok else
                 f"mechanism.noise_multiplier is {mech['noise_multiplier']} but {which} used z in {zs}"))

    # -- sampling as declared
    qs = sorted({c.sample_rate for c in current}, key=lambda q: -1.0 if q is None else q)
    problems = []
    if samp["method"] == "poisson":
        if samp["sample_rate"] is None or samp["expected_sample_size"] is None:
            problems.append("Poisson sampling declared without sample_rate and expected_sample_size")
        elif not all(q is not None and math.isclose(q, samp["sample_rate"], rel_tol=1e-12) for q in qs):
            problems.append(f"declared Poisson sampling at q = {samp['sample_rate']}, the ledger's events have "
                            f"q in {qs} (None = no sampling)")
        elif not math.isclose(samp["sample_rate"], samp["expected_sample_size"] / samp["population"], rel_tol=1e-6):
            problems.append(f"q = {samp['sample_rate']} is not expected_sample_size / population = "
                            f"{samp['expected_sample_size']} / {samp['population']}")
    else:
        if samp["sample_rate"] is not None:
            problems.append(f"method 'none' declared with a sample_rate {samp['sample_rate']}")
        if any(q is not None and q != 1.0 for q in qs):
            problems.append(f"no amplification declared, but the ledger's events are sub-sampled at q in {qs}")
    out.append(f("sampling.declared", not problems, "; ".join(problems) or
                 f"{samp['method']} sampling as declared (q = {samp['sample_rate']}, N = {samp['population']})"))

    # -- delta vs population
    out.append(_delta_finding(name, level, samp["population"], acc["delta"]))

    # -- one accountant per figure: the curve is the headline's, and ends at it
    out.append(_curve_finding(name, g))

    # -- plain-words statement
    out.append(_statement_finding(f"{name}.statement", g["statement"] == guarantee_statement(level, g, scope)))

    # -- versions (information only)
    now = {lib: package_version(lib) for lib in acc["library_versions"] if lib != "python"}
    diff = {lib: (v, now[lib]) for lib, v in acc["library_versions"].items() if lib in now and now[lib] != v}
    out.append(f("versions", True, "recomputed with the same library versions") if not diff else
               Finding(f"{name}.versions", "warn", "report made with " + ", ".join(
                   f"{lib} {then}, recomputed with {cur}" for lib, (then, cur) in diff.items())))

    if recompute_section is not None:
        out.extend(recompute_section(name, ledger, g))
    return out


def _release_check(ledger: PrivacyLedger, components: list, declared: Mapping[str, Any]) -> tuple[bool, str]:
    """Every entry naming a release matches its declaration: round 0, a plain Gaussian (no sampling) with the
    declared noise multiplier and sensitivity, each release at most once per run; no undeclared release name.

    In a device's lifetime ledger the declarations describe the current (last) run; a release of an earlier run
    must still be round 0, one unsampled Gaussian and once per run (its noise may differ)."""
    problems, seen = [], set()
    last_run = ledger.runs()[-1] if has_runs(ledger) else None
    for i, (entry, comps) in enumerate(zip(ledger, components, strict=True)):
        name = entry.metadata.get("release")
        if name in (None, "adapter") and entry.kind != LOCAL_RELEASE:
            continue
        current = last_run is None or entry.run == last_run
        if current and name not in declared:
            problems.append(f"entries[{i}] names release {name!r}, which the section does not declare")
            continue
        if (entry.run, name) in seen:
            problems.append(f"entries[{i}]: release {name!r} appears twice" + (f" in run {entry.run!r}"
                                                                                if entry.run else ""))
        seen.add((entry.run, name))
        shape_ok = entry.round == 0 and len(comps) == 1 and comps[0].sample_rate is None and comps[0].count == 1
        if not current:
            if not shape_ok:
                problems.append(f"entries[{i}] (release {name!r} of run {entry.run!r}) is not round 0, one "
                                "unsampled Gaussian")
            continue
        r = declared[name]
        ok = (shape_ok and math.isclose(comps[0].noise_multiplier, r["noise_multiplier"], rel_tol=1e-12)
              and _same(entry.metadata.get("clip_norm"), r["sensitivity"]))
        if not ok:
            problems.append(f"entries[{i}] (release {name!r}) is not round 0, Gaussian(z = {r['noise_multiplier']}) "
                            f"with sensitivity {r['sensitivity']} and no sampling, as declared")
    names = sorted({n for _, n in seen})
    return not problems, "; ".join(problems) or f"{len(seen)} round-0 release(s) as declared: {names}"


def _curve_finding(name: str, g: Mapping[str, Any]) -> Finding:
    """The epsilon-over-rounds curve must use the headline's accountant and end at the headline figure."""
    curve, acc = g["epsilon_by_round"], g["accounting"]
    check = f"{name}.epsilon_by_round.accountant"
    if curve["accountant"] != acc["accountant"]:
        return Finding(check, "warn", f"the curve uses the {curve['accountant']} accountant, the headline epsilon "
                                      f"{acc['accountant']}: a reader sees two figures for one run")
    last = curve["points"][-1]["epsilon"] if curve["points"] else None
    if last is None or not math.isclose(last, acc["epsilon"], rel_tol=1e-6, abs_tol=1e-9):
        return Finding(check, "fail", f"the curve ({curve['accountant']}) ends at {last}, the reported epsilon is "
                                      f"{acc['epsilon']}")
    return Finding(check, "pass", f"the curve uses the headline's {acc['accountant']} accountant and ends at the "
                                  f"reported epsilon {acc['epsilon']:.6g}")


def _delta_finding(name: str, level: str, n: int, delta: float) -> Finding:
    """delta against the population: fail at >= 1/N (publishing one random unit's whole data meets it), warn
    above 1/(10 N) (weak: fedrec's default is min(1e-6, 1/(10 N)) for users)."""
    who = "users" if level == USER_LEVEL else "example slots on the device"
    where = f"delta {delta:g} vs 1/N = {1 / n:.3g} (N = {n} {who})"
    if delta >= 1 / n:
        return Finding(f"{name}.delta.population", "fail",
                       f"{where}: delta >= 1/N, a mechanism that publishes one unit's data can meet it")
    if delta > 1 / (10 * n):
        return Finding(f"{name}.delta.population", "warn",
                       f"{where}: delta > 1/(10 N) = {1 / (10 * n):.3g}, a weak delta (a random unit's data is "
                       "published with probability up to N delta > 0.1)")
    return Finding(f"{name}.delta.population", "pass", f"{where}: delta <= 1/(10 N)")


def _statement_finding(check: str, same: bool) -> Finding:
    return Finding(check, "pass" if same else "fail",
                   "the statement matches the report's fields" if same else
                   "the plain-words statement does not match the report's fields (a figure was changed in one "
                   "place and not the other)")


def _same(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is b
    if isinstance(a, bool) or not isinstance(a, int | float):
        return False
    return math.isclose(a, b, rel_tol=1e-12)
