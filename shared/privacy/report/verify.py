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
``ledger.runs``        a device's lifetime ledger (entries keyed by run): the section's ``runs`` are the
                       ledger's runs with their rounds, releases, steps, noise, sample rates and curve epsilon.
``ledger.metadata``    each entry's metadata (noise multiplier, sample rate, steps) matches its event.
``mechanism.noise``    every release (with runs: of the current run) used the declared noise multiplier.
``sampling.declared``  the ledger's events (with runs: the current run's) have the declared sampling (Poisson
                       at rate q, or none) and q = expected sample size / population.
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

The checks that need no recomputation (``ledger.*``, ``mechanism.noise``, ``sampling.declared``,
``delta.population``, ``statement``, ``versions``, and those of ``record_level_across_devices`` and
``empirical_audit``) live in `consistency`, shared with the builders; this module adds the signature, the
schema and the recomputations (``epsilon.*`` and the empirical audit's lower bound).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fedrec.shared.privacy.accountants import ACCOUNTANTS, independent_accountants, make_accountant
from fedrec.shared.privacy.distributed_entries import gaussian_surrogate
from fedrec.shared.privacy.empirical import epsilon_lower_bound
from fedrec.shared.privacy.errors import (
    PrivacyError,
    ReportInputError,
    ReportSchemaError,
    SignatureError,
    UnknownAccountant,
)
from fedrec.shared.privacy.events import is_distributed
from fedrec.shared.privacy.ledger import PrivacyLedger
from fedrec.shared.privacy.report.consistency import Finding, report_findings
from fedrec.shared.privacy.report.document import loads_strict, validate_report
from fedrec.shared.privacy.report.lifetime import format_keys, point_key
from fedrec.shared.privacy.report.signing import verify_signature

# Relative tolerance of a recomputation with the same accountant: dp-accounting is deterministic (1e-6 leaves
# room for other platforms' floating point); PRV is numerical (Opacus' own eps_error is 0.01).
RECOMPUTE_RTOL = {"rdp": 1e-6, "pld": 1e-6, "prv": 1e-3}
# An upper bound may sit this far below dp-accounting's pessimistic PLD figure before it is called unsound:
# PLD's own discretisation pessimism and PRV's error band are both well under 1% in fedrec's regimes.
INDEPENDENT_RTOL = 0.01
ATOL = 1e-6


def has_failures(findings: list[Finding]) -> bool:
    return any(f.failed for f in findings)


def verify_report_file(path: str | Path, *, public_key: Ed25519PublicKey | None = None,
                       recompute: bool = True) -> list[Finding]:
    """`verify_report` on a file.

    Raises `ReportInputError` when there is nothing to check: the file cannot be read, is not UTF-8, or is not
    JSON at all (truncated). JSON that a crafted report could use to mislead a reader (duplicate keys, NaN) is a
    failed ``schema`` finding instead: that is a report failing its audit, not an input error.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ReportInputError(f"{path}: cannot read the report: {e}") from None
    try:
        obj = loads_strict(text, where=str(path))
    except ReportInputError:
        raise
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
    if recompute:
        findings.extend(report_findings(report, recompute_section=_epsilon_findings,
                                        recompute_audit=_lower_bound_findings))
    else:
        findings.extend(report_findings(report))
    return findings


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


def _epsilon_findings(name: str, ledger: PrivacyLedger, g: Mapping[str, Any]) -> list[Finding]:
    acc = g["accounting"]
    delta, reported, primary = acc["delta"], acc["epsilon"], acc["accountant"]
    events = ledger.events()
    out: list[Finding] = []
    computed: dict[str, float] = {}

    def compute(accountant: str, settings: Mapping[str, Any] | None, of: list | None = None) -> float | Finding:
        """The figure for the ledger's events (or `of`), or a finding saying why there is none: "skip" if a
        library is missing here."""
        try:
            return make_accountant(accountant, adjacency=ledger.adjacency, settings=settings).epsilon(
                events if of is None else of, delta=delta)
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
    # No other accountant reads Skellam events: compare with the Gaussian of the same variance and L2 sensitivity
    # (the Skellam bound is that Gaussian's plus a non-negative term), by dp-accounting's PLD.
    is_distributed_ledger = any(is_distributed(e) for e in events)
    reference = [gaussian_surrogate(e) for e in events] if is_distributed_ledger else None
    if is_distributed_ledger:
        others = ["pld"]
    for other in others:
        v = compute(other, None, reference) if reference is not None else (
            computed[other] if other in computed else compute(other, None))
        if isinstance(v, Finding):
            problems.append(v.message)
            continue
        figures.append(f"{other} {v:.6g}")
        method = ACCOUNTANTS[other].method
        if method == "pld" and reported < v * (1 - INDEPENDENT_RTOL) - ATOL:
            problems.append(f"reported ε = {reported:.6g} is below the tight pld figure {v:.6g} by more than "
                            f"{INDEPENDENT_RTOL:.0%}: it is not an upper bound"
                            + (" (pld of the Gaussian with each Skellam event's variance and sensitivity, a lower "
                               "reference)" if is_distributed_ledger else ""))
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
        keys = ledger.round_keys()  # (run, round): a device's lifetime ledger spans runs
        values = acc_c.cumulative_epsilons([[e.event for e in ledger if (e.run, e.round) == k] for k in keys],
                                           delta=delta)
        tol = RECOMPUTE_RTOL[acc_c.method]
        problems = []
        if [point_key(p) for p in points] != keys:
            problems.append(f"curve rounds {format_keys([point_key(p) for p in points])} are not the ledger's "
                            f"rounds {format_keys(keys)}")
        else:
            problems += [f"round {p['round']}: reported {p['epsilon']!r}, recomputed {v!r}"
                         for p, v in zip(points, values, strict=True)
                         if not math.isclose(p["epsilon"], v, rel_tol=tol, abs_tol=ATOL)]
        out.append(Finding(f"{name}.epsilon.by_round", "fail" if problems else "pass",
                           "; ".join(problems[:5]) or f"{len(points)} points recomputed with {curve['accountant']}"))
    except (PrivacyError, ValueError, ImportError) as e:
        out.append(Finding(f"{name}.epsilon.by_round", "fail", f"cannot recompute the curve: {e}"))
    return out


def _lower_bound_findings(name: str, a: Mapping[str, Any]) -> list[Finding]:
    """An empirical audit's lower bound, recomputed from its counts, and whether it stays below the claimed epsilon.

    ``below_claimed`` is the check that matters: a lower bound (valid at the stated confidence) above the claimed
    epsilon means the mechanism leaks more than its accounting says, a privacy bug.
    """
    bound, claimed = a["epsilon_lower_bound"], a["claimed_epsilon"]
    try:
        again = epsilon_lower_bound(m=a["canaries"], r=a["guesses"], v=a["correct"], delta=a["delta"],
                                    confidence=a["confidence"])
    except ValueError as e:
        return [Finding(f"{name}.recompute", "fail", f"cannot recompute the lower bound: {e}")]
    ok = math.isclose(again, bound, rel_tol=1e-6, abs_tol=1e-6)
    out = [Finding(f"{name}.recompute", "pass" if ok else "fail",
                   f"lower bound {bound!r}, recomputed from m = {a['canaries']}, r = {a['guesses']}, v = "
                   f"{a['correct']}, delta = {a['delta']:g}, confidence {a['confidence']:g}: {again!r}")]
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
