"""`fedrec audit verify`: check an epsilon report's signature and schema, recompute every epsilon from its ledger,
and check that what the report declares matches what its ledger records.

Each check yields a `Finding` with a stable id (``user_level.epsilon.recompute``, ``signature``, ...), a status
and a message naming the numbers involved. "fail" means the report must not be trusted as stated; "warn" means
something an auditor should know that does not invalidate it (for example, the signature is valid but no key
was pinned, so it proves integrity and not authorship); "skip" means a check could not run here.

The checks, per guarantee section (``user_level`` or ``record_level``):

``ledger.parse``       the ledger decodes (allow-listed DpEvents only) and holds the section's guarantee.
``ledger.rounds``      releases and rounds in the ledger match ``composition`` (rounds run, rounds without a
                       release, local steps): a removed or added entry shows up here.
``ledger.metadata``    each entry's metadata (noise multiplier, sample rate, steps) matches its event.
``mechanism.noise``    every release used the declared noise multiplier ("noise as configured").
``sampling.declared``  the ledger's events have the declared sampling (Poisson at rate q, or none) and
                       q = expected sample size / population.
``delta.population``   delta < 1/N (user-level: N users; record-level: N = the device's K example slots).
``epsilon.recompute``  the reported epsilon, recomputed from the ledger with the declared accountant and settings.
``epsilon.cross_check`` every cross-check figure in the report, recomputed.
``epsilon.independent`` an accountant independent of the one that produced the figure (other method or other
                       library: RDP -> PLD, PLD -> RDP, Opacus PRV -> dp-accounting RDP and PLD) agrees that
                       the figure is a valid upper bound: not below the tight PLD figure, and (for PLD) not
                       above the RDP bound, each within a stated tolerance.
``epsilon.by_round``   the epsilon-over-rounds curve, recomputed.
``statement``          the plain-words statement is the one the report's fields produce.
``versions``           library versions then and now (warn only: recomputation is what counts).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fedrec.shared.privacy.accountants import ACCOUNTANTS, independent_accountants, make_accountant
from fedrec.shared.privacy.empirical import epsilon_lower_bound
from fedrec.shared.privacy.errors import (
    LedgerError,
    PrivacyError,
    ReportSchemaError,
    SignatureError,
    UnknownAccountant,
    UnsupportedMechanism,
)
from fedrec.shared.privacy.ledger import RECORD_LEVEL, USER_LEVEL, PrivacyLedger, gaussian_components
from fedrec.shared.privacy.report import (
    across_devices_statement,
    empirical_statement,
    guarantee_statement,
    loads_strict,
    validate_report,
    verify_signature,
)

Status = Literal["pass", "fail", "warn", "skip"]

# Relative tolerance of a recomputation with the same accountant: dp-accounting is deterministic (1e-6 leaves
# room for other platforms' floating point); PRV is numerical (Opacus' own eps_error is 0.01).
RECOMPUTE_RTOL = {"rdp": 1e-6, "pld": 1e-6, "prv": 1e-3}
# An upper bound may sit this far below dp-accounting's pessimistic PLD figure before it is called unsound:
# PLD's own discretisation pessimism and PRV's error band are both well under 1% in fedrec's regimes.
INDEPENDENT_RTOL = 0.01
ATOL = 1e-6


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


def has_failures(findings: list[Finding]) -> bool:
    return any(f.failed for f in findings)


def verify_report_file(path: str | Path, *, public_key: Ed25519PublicKey | None = None,
                       recompute: bool = True) -> list[Finding]:
    """`verify_report` on a file; a file that is not strict JSON is a failed ``schema`` finding."""
    try:
        obj = loads_strict(Path(path).read_text(encoding="utf-8"), where=str(path))
    except ReportSchemaError as e:
        return [Finding("schema", "fail", str(e))]
    return verify_report(obj, public_key=public_key, recompute=recompute)


def verify_report(report: Any, *, public_key: Ed25519PublicKey | None = None,
                  recompute: bool = True) -> list[Finding]:
    """Every check on a parsed report, in order: signature, schema, then each guarantee section."""
    findings = [_signature_finding(report, public_key)]
    try:
        validate_report(report)
    except ReportSchemaError as e:
        problems = "; ".join(e.problems)
        findings.append(Finding("schema", "fail", f"{problems} (other checks skipped)"))
        return findings
    findings.append(Finding("schema", "pass", f"valid {report['schema']} v{report['schema_version']} "
                                              f"{report['report_type']} report"))
    findings.extend(_report_findings(report, recompute=recompute))
    return findings


def consistency_findings(report: Mapping[str, Any]) -> list[Finding]:
    """The checks that need no recomputation (used when building a report, to refuse an inconsistent one)."""
    return _report_findings(report, recompute=False)


# ---------------------------------------------------------------------------------------------------------------


def _signature_finding(report: Any, public_key: Ed25519PublicKey | None) -> Finding:
    if not isinstance(report, Mapping):
        return Finding("signature", "fail", "the report is not a JSON object")
    try:
        fp = verify_signature(report, public_key)
    except SignatureError as e:
        return Finding("signature", "fail", str(e))
    if public_key is None:
        return Finding("signature", "warn", f"valid Ed25519 signature by the embedded key {fp}, but no public key "
                                            f"was given: this shows the report is unchanged, not who signed it")
    return Finding("signature", "pass", f"valid Ed25519 signature by the expected key {fp}")


def _report_findings(report: Mapping[str, Any], *, recompute: bool) -> list[Finding]:
    out: list[Finding] = []
    for name, level in (("user_level", USER_LEVEL), ("record_level", RECORD_LEVEL)):
        if report.get(name) is not None:
            out.extend(_section_findings(name, level, report[name], report["scope"], recompute=recompute))
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
        out.extend(_empirical_findings(report, recompute=recompute))
    return out


def _empirical_findings(report: Mapping[str, Any], *, recompute: bool) -> list[Finding]:
    """The empirical audit: counts consistent, claimed epsilon = the report's, bound recomputed and <= claimed.

    ``below_claimed`` is the check that matters: a lower bound (valid at the stated confidence) above the claimed
    epsilon means the mechanism leaks more than its accounting says, a privacy bug. It runs with the
    recomputation only (never when a report is built, so a failing audit is still written and can be shown).
    """
    section = report["empirical_audit"]
    out = [_statement_finding("empirical_audit.statement", section["statement"] == empirical_statement(section))]
    for a in section["audits"]:
        name = f"empirical_audit.{a['level'].replace('-', '_')}"
        bound, claimed = a["epsilon_lower_bound"], a["claimed_epsilon"]
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
        if not recompute or problems:
            continue
        try:
            again = epsilon_lower_bound(m=a["canaries"], r=a["guesses"], v=a["correct"], delta=a["delta"],
                                        confidence=a["confidence"])
        except ValueError as e:
            out.append(Finding(f"{name}.recompute", "fail", f"cannot recompute the lower bound: {e}"))
            continue
        ok = math.isclose(again, bound, rel_tol=1e-6, abs_tol=1e-6)
        out.append(Finding(f"{name}.recompute", "pass" if ok else "fail",
                           f"lower bound {bound!r}, recomputed from m = {a['canaries']}, r = {a['guesses']}, v = "
                           f"{a['correct']}, delta = {a['delta']:g}, confidence {a['confidence']:g}: {again!r}"))
        if claimed is None:
            out.append(Finding(f"{name}.below_claimed", "skip", f"no {a['level']} epsilon is claimed ("
                                                                f"{a['claimed_source']}); the lower bound "
                                                                f"{again:.4g} shows what the attack measured"))
        elif again > claimed + ATOL:
            out.append(Finding(f"{name}.below_claimed", "fail",
                               f"PRIVACY BUG: the measured {a['level']} lower bound ε >= {again:.4g} "
                               f"({a['confidence']:.0%} confidence) EXCEEDS the claimed ε = {claimed:.4g}: the "
                               f"implementation leaks more than its accounting says (a correct one fails this check "
                               f"with probability at most {1 - a['confidence']:.0%})"))
        else:
            out.append(Finding(f"{name}.below_claimed", "pass",
                               f"measured lower bound {again:.4g} <= claimed ε = {claimed:.4g}"))
        est = a.get("estimate")
        if est is not None and claimed is not None:
            e = math.inf if est["epsilon"] is None else est["epsilon"]
            out.append(Finding(f"{name}.estimate", "pass" if e <= claimed + ATOL else "warn",
                               f"one-shot estimate ε ≈ {e:.4g} from {est['inserted']} inserted canaries "
                               + ("<=" if e <= claimed + ATOL else "> (an estimate, not a bound: sampling error "
                                  "with few canaries can cause this; repeat with more canary clients)")
                               + f" claimed ε = {claimed:.4g}"))
    return out


def _section_findings(name: str, level: str, g: Mapping[str, Any], scope: Mapping[str, Any], *,
                      recompute: bool) -> list[Finding]:
    def f(check: str, ok: bool | None, message: str) -> Finding:
        status: Status = "skip" if ok is None else ("pass" if ok else "fail")
        return Finding(f"{name}.{check}", status, message)

    try:
        ledger = PrivacyLedger.from_json(g["ledger"], where=f"{name}.ledger")
        components = [gaussian_components(e.event) for e in ledger]
    except (LedgerError, UnsupportedMechanism) as e:
        return [f("ledger.parse", False, f"{e} (other checks of this section skipped)")]
    out = [f("ledger.parse", True, f"{len(ledger)} {ledger.kind} entries, rounds "
                                   f"{_span(ledger.rounds())}, adjacency {ledger.adjacency}")]
    flat = [c for comps in components for c in comps]
    mech, samp, comp, acc = g["mechanism"], g["sampling"], g["composition"], g["accounting"]

    # -- ledger vs composition
    problems = []
    if comp["releases"] != len(ledger):
        problems.append(f"composition.releases is {comp['releases']} but the ledger holds {len(ledger)} entries")
    rounds = ledger.rounds()
    if level == USER_LEVEL:
        skipped = set(comp["rounds_without_release"])
        expected = set(range(1, comp["rounds_run"] + 1)) - skipped
        if not skipped <= set(range(1, comp["rounds_run"] + 1)):
            problems.append(f"rounds_without_release {sorted(skipped)} are not all in 1..{comp['rounds_run']}")
        if set(rounds) != expected:
            missing, extra = sorted(expected - set(rounds)), sorted(set(rounds) - expected)
            problems.append(f"{comp['rounds_run']} rounds run, {len(skipped)} without release, so releases are "
                            f"expected in {len(expected)} rounds; ledger rounds missing: {missing or 'none'}, "
                            f"unexpected: {extra or 'none'}")
    else:
        if len(rounds) != comp["rounds_run"]:
            problems.append(f"composition.rounds_run is {comp['rounds_run']} but the ledger has entries in "
                            f"{len(rounds)} rounds ({_span(rounds)})")
        steps = sum(c.count for c in flat)
        if comp["local_steps"] != steps:
            problems.append(f"composition.local_steps is {comp['local_steps']} but the ledger records {steps} steps")
    out.append(f("ledger.rounds", not problems, "; ".join(problems) or
                 f"{len(ledger)} releases in {len(rounds)} rounds, as composition declares"))

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

    # -- noise as configured
    zs = sorted({c.noise_multiplier for c in flat})
    ok = bool(zs) and all(math.isclose(z, mech["noise_multiplier"], rel_tol=1e-12) for z in zs)
    out.append(f("mechanism.noise", ok, f"every release used z = {mech['noise_multiplier']}" if ok else
                 f"mechanism.noise_multiplier is {mech['noise_multiplier']} but the ledger's releases used z in {zs}"))

    # -- sampling as declared
    qs = sorted({c.sample_rate for c in flat}, key=lambda q: -1.0 if q is None else q)
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
    n, delta = samp["population"], acc["delta"]
    who = "users" if level == USER_LEVEL else "example slots on the device"
    out.append(f("delta.population", delta < 1 / n, f"delta {delta:g} {'<' if delta < 1 / n else '>='} 1/N = "
                 f"{1 / n:.3g} (N = {n} {who})" + ("" if delta < 1 / n else
                                                   ": a mechanism that publishes one unit's data can meet it")))

    # -- plain-words statement
    out.append(_statement_finding(f"{name}.statement", g["statement"] == guarantee_statement(level, g, scope)))

    # -- versions (information only)
    now = {lib: _installed(lib) for lib in acc["library_versions"] if lib != "python"}
    diff = {lib: (v, now[lib]) for lib, v in acc["library_versions"].items() if lib in now and now[lib] != v}
    out.append(f("versions", True, "recomputed with the same library versions") if not diff else
               Finding(f"{name}.versions", "warn", "report made with " + ", ".join(
                   f"{lib} {then}, recomputed with {cur}" for lib, (then, cur) in diff.items())))

    if recompute:
        out.extend(_epsilon_findings(name, ledger, g))
    return out


def _epsilon_findings(name: str, ledger: PrivacyLedger, g: Mapping[str, Any]) -> list[Finding]:
    acc = g["accounting"]
    delta, reported, primary = acc["delta"], acc["epsilon"], acc["accountant"]
    events = ledger.events()
    out: list[Finding] = []
    computed: dict[str, float] = {}

    def compute(accountant: str, settings: Mapping[str, Any] | None) -> float | Finding:
        """The figure, or a finding saying why there is none: "skip" if a library is missing here."""
        try:
            return make_accountant(accountant, adjacency=ledger.adjacency, settings=settings).epsilon(
                events, delta=delta)
        except ImportError as e:
            return Finding("", "skip", f"{accountant} is not available here ({e})")
        except (PrivacyError, ValueError) as e:
            return Finding("", "fail", f"{accountant} cannot recompute: {e}")

    # Same accountant, same settings: must reproduce the figure.
    value = compute(primary, acc["accountant_settings"])
    if isinstance(value, Finding):
        out.append(Finding(f"{name}.epsilon.recompute", value.status, value.message))
    else:
        computed[primary] = value
        tol = RECOMPUTE_RTOL[ACCOUNTANTS[primary].method]
        ok = math.isclose(value, reported, rel_tol=tol, abs_tol=ATOL)
        out.append(Finding(f"{name}.epsilon.recompute", "pass" if ok else "fail",
                           f"reported ε = {reported!r}, recomputed with {primary} from {len(events)} releases: "
                           f"{value!r}" + ("" if ok else f" (differs by more than rel {tol:g})")))

    # Cross-check figures in the report.
    bad, good, skipped = [], [], []
    for c in acc["cross_check"]:
        v = compute(c["accountant"], c["accountant_settings"])
        if isinstance(v, Finding):
            (bad if v.failed else skipped).append(v.message)
            continue
        computed.setdefault(c["accountant"], v)
        tol = RECOMPUTE_RTOL[ACCOUNTANTS[c["accountant"]].method]
        (good if math.isclose(v, c["epsilon"], rel_tol=tol, abs_tol=ATOL) else bad).append(
            f"{c['accountant']}: reported {c['epsilon']!r}, recomputed {v!r}")
    out.append(Finding(f"{name}.epsilon.cross_check", "fail" if bad else ("pass" if good else "skip"),
                       "; ".join(bad + good + skipped) or "no cross-check figures in the report"))

    # Independent accountants: is the reported figure a plausible upper bound?
    try:
        others = independent_accountants(primary)
    except UnknownAccountant as e:
        others = []
        out.append(Finding(f"{name}.epsilon.independent", "fail", str(e)))
    figures, problems = [], []
    for other in others:
        v = computed[other] if other in computed else compute(other, None)
        if isinstance(v, Finding):
            problems.append(v.message)
            continue
        figures.append(f"{other} {v:.6g}")
        method = ACCOUNTANTS[other].method
        if method == "pld" and reported < v * (1 - INDEPENDENT_RTOL) - ATOL:
            problems.append(f"reported ε = {reported:.6g} is below the tight pld figure {v:.6g} by more than "
                            f"{INDEPENDENT_RTOL:.0%}: it is not an upper bound")
        if method == "rdp" and ACCOUNTANTS[primary].method == "pld" and reported > v * (1 + INDEPENDENT_RTOL) + ATOL:
            problems.append(f"reported pld ε = {reported:.6g} is above the rdp upper bound {v:.6g}: the pld figure "
                            f"cannot be right")
    if others:
        out.append(Finding(f"{name}.epsilon.independent", "fail" if problems else "pass",
                           "; ".join(problems) or f"reported ε = {reported:.6g} ({primary}) is consistent with "
                                                  f"independent accountants: {', '.join(figures)}"))

    # The curve.
    curve = g["epsilon_by_round"]
    points = curve["points"]
    try:
        acc_c = make_accountant(curve["accountant"], adjacency=ledger.adjacency,
                                settings=curve["accountant_settings"])
        rounds = ledger.rounds()
        values = acc_c.cumulative_epsilons([[e.event for e in ledger if e.round == r] for r in rounds],
                                           delta=delta)
        tol = RECOMPUTE_RTOL[acc_c.method]
        problems = []
        if [p["round"] for p in points] != rounds:
            problems.append(f"curve rounds {_span([p['round'] for p in points])} are not the ledger's rounds "
                            f"{_span(rounds)}")
        else:
            problems += [f"round {p['round']}: reported {p['epsilon']!r}, recomputed {v!r}"
                         for p, v in zip(points, values, strict=True)
                         if not math.isclose(p["epsilon"], v, rel_tol=tol, abs_tol=ATOL)]
        out.append(Finding(f"{name}.epsilon.by_round", "fail" if problems else "pass",
                           "; ".join(problems[:5]) or f"{len(points)} points recomputed with {curve['accountant']}"))
    except (PrivacyError, ValueError, ImportError) as e:
        out.append(Finding(f"{name}.epsilon.by_round", "fail", f"cannot recompute the curve: {e}"))
    return out


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


def _span(rounds: list[int]) -> str:
    if not rounds:
        return "none"
    return f"{rounds[0]}..{rounds[-1]}" if rounds == list(range(rounds[0], rounds[-1] + 1)) else str(rounds)


def _installed(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"
