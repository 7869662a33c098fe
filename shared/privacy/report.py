"""Epsilon reports: one signed JSON document per run (server) and one per device, versioned and validated.

A report states a guarantee the way an auditor needs it (Ponomareva et al. 2023, section 5.3; the fields of
`docs/privacy-reports.md`): the DP setting and trust model, the privacy unit and its contribution bound, the
adjacency relation, what is and is not covered, the mechanism and sampling parameters, the composition, the
accountant with its settings and library versions, delta, epsilon as an upper bound plus a second
accountant's figure, the release-by-release ledger and the code version.

Two guarantees are always reported separately, never composed into one number:

* ``user_level`` (run reports): DP-FedAvg on the server; the unit is one user's whole listening history.
* ``record_level`` (device reports): Opacus DP-SGD on one device; the unit is one training record. The run
  report only summarises the devices' self-reported figures (``record_level_across_devices``).

Epsilon is always computed here from the ledger, never passed in, so a report can't state a number its own
ledger does not support; `fedrec audit verify` recomputes it independently.

Signing: `sign_report` signs the canonical JSON of the report without its ``signature`` member (sorted keys,
no whitespace, UTF-8, Python's shortest float repr) with Ed25519; `verify_signature` checks it, against a
pinned public key when one is given.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fedrec.shared.privacy import keys
from fedrec.shared.privacy._io import atomic_write_bytes
from fedrec.shared.privacy.accountants import ACCOUNTANTS, make_accountant
from fedrec.shared.privacy.errors import KeyFileError, ReportError, ReportSchemaError, SignatureError
from fedrec.shared.privacy.ledger import RECORD_LEVEL, USER_LEVEL, PrivacyLedger, gaussian_components
from fedrec.shared.privacy.schema import REPORT_SCHEMA, SCHEMA_NAME, SCHEMA_VERSION, SIGNED_CONTENT, validate

# What each report type covers unless the caller says otherwise; `not_covered` is the honest list of what
# leaves the device or the server outside the DP mechanism.
RUN_OUTPUTS_COVERED = ("every round's global adapter (each released aggregate, including intermediate ones)",)
DEVICE_OUTPUTS_COVERED = ("every adapter update this device sent to the server, in every round it trained in",)
DEFAULT_NOT_COVERED = (
    "training and evaluation metrics sent in the clear (losses, NDCG/HR, timings)",
    "counts sent in the clear (number of examples or records, update weights, which clients took part)",
    "the evaluation protocol and its results",
    "the public item catalog (artists, tags) and the public base model",
    "hyper-parameter tuning and any run not recorded in this ledger",
)
USER_LEVEL_FAILED_ROUNDS_POLICY = (
    "a round counts as a release whenever its noisy aggregate was released (sent to any client or saved), "
    "even if the round failed afterwards; rounds that released nothing are listed in rounds_without_release"
)
RECORD_LEVEL_FAILED_ROUNDS_POLICY = (
    "every local DP-SGD step is counted, whether or not the resulting update reached the server"
)
USER_UNIT = "one user, i.e. the whole listening history held on one device (all of its records)"
USER_BOUND = "at most one update per round, its whole adapter delta clipped to L2 norm S"
RECORD_UNIT = (
    "one training-example slot on this device: the user's listening records are hashed into a fixed number K of "
    "slots (examples-per-user), each record into exactly one, and a slot's records form one example (an empty "
    "slot is an empty example); K, the sampling rate and the step count do not depend on the data. Adding or "
    "removing one listening record changes one slot's example, i.e. replaces one example, so for a single record "
    "the guarantee holds at (2 epsilon, (1 + e^epsilon) delta) by group privacy of two examples"
)
RECORD_BOUND = "at most one per-example gradient per step, clipped to L2 norm C"
CURVE_ACCOUNTANT = "rdp"


# ---------------------------------------------------------------------------------------------------------------
# Inputs


@dataclass(frozen=True, kw_only=True)
class Scope:
    """The DP setting and trust model: who is trusted with what, and which outputs the guarantee covers.

    `server` is the server's assumed behaviour ("honest-but-curious": runs the protocol, adds the noise, but may
    look at what it sees). `secure_aggregation` names the protocol if the server only sees sums, else None.
    `outputs_covered` defaults per report type; `not_covered` lists what leaves outside the mechanism.
    """

    dp_setting: str
    server: str = "honest-but-curious"
    secure_aggregation: str | None = None
    colluding_clients_max: int | None = None
    trust_notes: str = ""
    outputs_covered: tuple[str, ...] | None = None
    not_covered: tuple[str, ...] = DEFAULT_NOT_COVERED

    def to_json(self, report_type: str) -> dict[str, Any]:
        covered = self.outputs_covered
        if covered is None:
            covered = RUN_OUTPUTS_COVERED if report_type == "run" else DEVICE_OUTPUTS_COVERED
        return {"dp_setting": self.dp_setting,
                "trust_model": {"server": self.server, "secure_aggregation": self.secure_aggregation,
                                "colluding_clients_max": self.colluding_clients_max, "notes": self.trust_notes},
                "outputs_covered": list(covered), "not_covered": list(self.not_covered)}


@dataclass(frozen=True, kw_only=True)
class Mechanism:
    """The noise mechanism as configured: the verifier checks every ledger event against `noise_multiplier`.

    `rng` says where the noise comes from (for example "torch.Generator seeded from secrets; not a CSPRNG, no
    floating-point hardening"), because DP proofs assume ideal Gaussian samples.
    """

    name: str
    noise_multiplier: float
    clip_norm: float
    clipping: str
    rng: str
    noise_distribution: str = "gaussian"
    aggregation_weights: str | None = None

    @classmethod
    def dp_fedavg(cls, *, noise_multiplier: float, clip_norm: float, rng: str,
                  aggregation_weights: str = "equal weights, fixed denominator (expected clients per round)",
                  clipping: str = "flat L2 over the whole adapter delta, fixed norm") -> Mechanism:
        """DP-FedAvg: Gaussian noise of std z * S added to the sum of updates each clipped to S."""
        return cls(name="DP-FedAvg (Gaussian noise on the sum of clipped updates)", noise_multiplier=noise_multiplier,
                   clip_norm=clip_norm, clipping=clipping, rng=rng, aggregation_weights=aggregation_weights)

    @classmethod
    def dp_sgd(cls, *, noise_multiplier: float, max_grad_norm: float, rng: str,
               clipping: str = "per-example flat L2 over all trainable parameters, fixed norm") -> Mechanism:
        """Opacus DP-SGD: per-example gradients clipped to C, Gaussian noise of std z * C on their sum."""
        version = _version("opacus")
        return cls(name=f"DP-SGD (Opacus {version})", noise_multiplier=noise_multiplier, clip_norm=max_grad_norm,
                   clipping=clipping, rng=rng, aggregation_weights=None)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "noise_multiplier": float(self.noise_multiplier),
                "clip_norm": float(self.clip_norm), "clipping": self.clipping,
                "noise_distribution": self.noise_distribution, "aggregation_weights": self.aggregation_weights,
                "rng": self.rng}


@dataclass(frozen=True, kw_only=True)
class Sampling:
    """How the units taking part in each release were chosen, out of a population of `population`.

    User-level: clients per round out of N users. Record-level: example slots per DP-SGD step out of the device's
    K slots. Only Poisson sampling from a fixed, known population earns amplification; otherwise use
    `no_amplification` and account each release as a plain Gaussian.
    """

    method: Literal["poisson", "none"]
    population: int
    expected_sample_size: float | None
    sample_rate: float | None
    evidence: str = ""

    @classmethod
    def poisson(cls, *, population: int, sample_rate: float | None = None,
                expected_sample_size: float | None = None, evidence: str = "") -> Sampling:
        """Poisson sampling; give `sample_rate` q or `expected_sample_size` (q * population), not both."""
        if (sample_rate is None) == (expected_sample_size is None):
            raise ReportError("Sampling.poisson: give exactly one of sample_rate and expected_sample_size")
        if sample_rate is None:
            sample_rate = float(expected_sample_size) / population  # type: ignore[arg-type]
        else:
            expected_sample_size = float(sample_rate) * population
        return cls(method="poisson", population=int(population), expected_sample_size=float(expected_sample_size),
                   sample_rate=float(sample_rate), evidence=evidence)

    @classmethod
    def no_amplification(cls, *, population: int, expected_sample_size: float | None = None,
                         evidence: str = "") -> Sampling:
        """Sampling not controlled or not provably Poisson: no amplification is claimed."""
        return cls(method="none", population=int(population),
                   expected_sample_size=None if expected_sample_size is None else float(expected_sample_size),
                   sample_rate=None, evidence=evidence)

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "population": self.population,
                "expected_sample_size": self.expected_sample_size, "sample_rate": self.sample_rate,
                "evidence": self.evidence}


@dataclass(frozen=True, kw_only=True)
class GuaranteeInputs:
    """Everything needed to state one guarantee; epsilon itself is computed from `ledger`.

    `rounds_run`: user-level, the number of server rounds run (numbered 1..rounds_run); record-level, the
    number of rounds this device trained in. `rounds_without_release` (user-level): rounds that released no
    aggregate. `accountant` is the primary (reported, budgeted) accountant; `cross_check` the second figures.
    """

    ledger: PrivacyLedger
    mechanism: Mechanism
    sampling: Sampling
    delta: float
    rounds_run: int
    rounds_without_release: tuple[int, ...] = ()
    failed_rounds_policy: str | None = None
    accountant: str = "pld"
    accountant_settings: Mapping[str, Any] | None = None
    cross_check: tuple[str, ...] = ("rdp",)
    unit_description: str | None = None
    contribution_bound: str | None = None


# ---------------------------------------------------------------------------------------------------------------
# Building


def build_run_report(*, run_id: str, scope: Scope, user_level: GuaranteeInputs | None,
                     record_level_epsilons: Sequence[float] = (), record_level_delta: float | None = None,
                     record_level_accountant: str | None = None, created_at: datetime | None = None,
                     code_version: Mapping[str, Any] | None = None, strict: bool = True,
                     empirical_audit: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The server's report: the user-level guarantee (or None: "no user-level guarantee") and a summary of
    the record-level epsilons the devices reported (at `record_level_delta`, from `record_level_accountant`).

    `empirical_audit` (optional; `fedrec.server.audit`): ``{"confidence", "audits": [...]}``, the epsilon
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
    """One device's report: its record-level guarantee over every round it trained in."""
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
    return {"fedrec": _version("fedrec"), "git_commit": commit}


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
    curve = make_accountant(CURVE_ACCOUNTANT, adjacency=ledger.adjacency)
    rounds = ledger.rounds()
    batches = [[e.event for e in ledger if e.round == r] for r in rounds]
    points = curve.cumulative_epsilons(batches, delta=g.delta)
    libraries = {"fedrec": _version("fedrec"), "dp-accounting": _version("dp-accounting"),
                 "python": platform.python_version()}
    for name in [g.accountant, *g.cross_check]:
        lib = ACCOUNTANTS[name].library
        libraries[lib] = _version(lib)
    if level == RECORD_LEVEL:
        libraries["opacus"] = _version("opacus")
    steps = sum(c.count for e in events for c in gaussian_components(e)) if level == RECORD_LEVEL else None
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
        "epsilon_by_round": {"accountant": CURVE_ACCOUNTANT, "accountant_settings": curve.settings(),
                             "points": [{"round": r, "epsilon": e} for r, e in zip(rounds, points, strict=True)]},
        "ledger": ledger.to_json(),
    }
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
        from fedrec.shared.privacy.verify import consistency_findings  # verify imports this module

        failed = [f for f in consistency_findings(report) if f.status == "fail"]
        if failed:
            raise ReportError("the report would fail its audit: " + "; ".join(f"{f.check}: {f.message}"
                                                                               for f in failed))
    return report


# ---------------------------------------------------------------------------------------------------------------
# Plain-words statements (pure functions of the report, so the verifier can regenerate and compare them)


def _num(x: float) -> str:
    return f"{x:.5g}"


def _section(level: str) -> str:
    return "user_level" if level == USER_LEVEL else "record_level"


def guarantee_statement(level: str, g: Mapping[str, Any], scope: Mapping[str, Any]) -> str:
    """The guarantee in plain words, always naming the privacy unit, the adversary and what is not covered."""
    acc, mech, samp, comp = g["accounting"], g["mechanism"], g["sampling"], g["composition"]
    tm = scope["trust_model"]
    trust = f"the server is {tm['server']}"
    if tm.get("secure_aggregation"):
        trust += f" and sees only sums (secure aggregation: {tm['secure_aggregation']})"
    if tm.get("colluding_clients_max") is not None:
        trust += f", with at most {tm['colluding_clients_max']} colluding clients"
    if tm.get("notes"):
        trust += f"; {tm['notes']}"
    z, s = mech["noise_multiplier"], mech["clip_norm"]
    cross = ", ".join(f"{c['accountant']} gives {_num(c['epsilon'])}" for c in acc["cross_check"])
    lib = ACCOUNTANTS[acc["accountant"]].library if acc["accountant"] in ACCOUNTANTS else "unknown library"
    accounting = (f"epsilon is an upper bound from the {acc['accountant']} accountant ({lib} "
                  f"{acc['library_versions'].get(lib, '?')})" + (f"; as a cross-check, {cross}" if cross else ""))
    if level == USER_LEVEL:
        who, unit_word, clip = "each user's whole listening history", "user", "each user's update"
        if samp["method"] == "poisson":
            sampling = (f"each round every one of N = {samp['population']} users is sampled independently with "
                        f"probability q = {_num(samp['sample_rate'])} (expected "
                        f"{_num(samp['expected_sample_size'])} per round)")
        else:
            sampling = (f"no amplification by sampling is claimed (population N = {samp['population']}; each "
                        f"round is accounted as if every user took part)")
        span = f"{comp['releases']} released aggregates in {comp['rounds_run']} rounds"
        extra = ""
    else:
        who, unit_word, clip = ("each training-example slot on this device (a single listening record: see the "
                                "privacy unit)", "example slot", "each per-example gradient")
        if samp["method"] == "poisson":
            sampling = (f"each step samples every one of the device's {samp['population']} slots independently "
                        f"with probability q = {_num(samp['sample_rate'])} (expected batch "
                        f"{_num(samp['expected_sample_size'])})")
        else:
            sampling = f"no amplification by sampling is claimed ({samp['population']} slots)"
        span = f"{comp['local_steps']} DP-SGD steps in the {comp['rounds_run']} rounds this device trained in"
        extra = (" This is not a user-level guarantee: it does not bound what the updates reveal about this "
                 "user's listening history as a whole.")
    adjacency = {"add_or_remove_one": f"adding or removing one {unit_word}",
                 "replace_one": f"replacing one {unit_word}",
                 "replace_special": f"replacing one {unit_word} with a special (zero) one"}[g["adjacency"]]
    return (
        f"{'User' if level == USER_LEVEL else 'Record'}-level (ε = {_num(acc['epsilon'])}, δ = {acc['delta']:.3g}) "
        f"differential privacy for {who} (privacy unit: {g['privacy_unit']['description']}; contribution bound: "
        f"{g['privacy_unit']['contribution_bound']}), against anyone who sees "
        f"{'; '.join(scope['outputs_covered'])}; trust model: {trust}.{extra} "
        f"Neighbouring data sets differ by {adjacency}. "
        f"Mechanism: {mech['name']}; {clip} is clipped to L2 norm {_num(s)} and Gaussian noise of standard "
        f"deviation z·{_num(s)} = {_num(z * s)} (z = {_num(z)}) is added to the sum; {sampling}. "
        f"Composition: {span}. Accounting: {accounting}. "
        f"Not covered: {'; '.join(scope['not_covered']) or 'nothing listed'}."
    )


def across_devices_statement(block: Mapping[str, Any]) -> str:
    e = block["epsilon"]
    return (f"Record-level, per device: across the {block['devices']} devices that reported, record-level ε at "
            f"δ = {block['delta']:.3g} ranges from {_num(e['min'])} to {_num(e['max'])} (median {_num(e['median'])}, "
            f"90th percentile {_num(e['p90'])}; {block['accountant']} accountant). Each figure protects one "
            f"training-example slot of one device (one of its K fixed slots of listening records; a single record is "
            f"covered at "
            f"(2ε, (1+e^ε)δ) by group privacy), not a user's whole history, and is {block['source']}.")


def empirical_statement(section: Mapping[str, Any]) -> str:
    """The empirical audit in plain words: each measured lower bound beside the epsilon the run claims."""
    parts = []
    for a in section["audits"]:
        claimed = ("no " + a["level"] + " epsilon is claimed" if a["claimed_epsilon"] is None
                   else f"the claimed ε is {_num(a['claimed_epsilon'])}")
        text = (f"{a['level']}: ε ≥ {_num(a['epsilon_lower_bound'])} at δ = {a['delta']:.3g} with "
                f"{a['confidence']:.0%} confidence ({a['correct']} of {a['guesses']} membership guesses correct "
                f"on {a['canaries']} canaries), while {claimed}")
        est = a.get("estimate")
        if est is not None:
            text += (f"; one-shot estimate ε ≈ {_num(est['epsilon'])}" if est["epsilon"] is not None
                     else "; one-shot estimate unbounded")
        parts.append(text)
    return ("Empirical audit, measured in this run (a lower bound, not a guarantee): " + "; ".join(parts) + ". "
            "A lower bound above the claimed ε would mean the implementation leaks more than its accounting says "
            "(on a correct implementation that happens with probability at most 1 - confidence). The bounds "
            "measure one attack on canaries in one run: they show what was detectable, not that nothing more is.")


# ---------------------------------------------------------------------------------------------------------------
# Validation, signing, files


def validate_report(report: Any) -> None:
    """Raise `ReportSchemaError` (naming the field) unless `report` is a valid report of a known version."""
    if not isinstance(report, dict):
        raise ReportSchemaError(f"report: expected an object, found {type(report).__name__}", field="report")
    if report.get("schema") != SCHEMA_NAME:
        raise ReportSchemaError(f"report.schema: expected {SCHEMA_NAME!r}, found {report.get('schema')!r}",
                                field="report.schema")
    version = report.get("schema_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION:
        raise ReportSchemaError(f"report.schema_version: this fedrec reads versions 1..{SCHEMA_VERSION}, found "
                                f"{version}; upgrade fedrec to read it", field="report.schema_version")
    validate(report, REPORT_SCHEMA)
    kind = report["report_type"]
    rules = ({"device_id": False, "user_level": None, "record_level": False, "record_level_across_devices": None}
             if kind == "run" else
             {"device_id": True, "user_level": False, "record_level": True, "record_level_across_devices": False})
    if kind == "device" and report.get("empirical_audit") is not None:
        raise ReportSchemaError("report.empirical_audit: only run reports carry an empirical audit, found one in a "
                                "device report", field="report.empirical_audit")
    for name, must in rules.items():
        present = report[name] is not None
        if must is False and present:
            raise ReportSchemaError(f"report.{name}: must be null in a {kind} report, found a value",
                                    field=f"report.{name}")
        if must is True and not present:
            raise ReportSchemaError(f"report.{name}: required in a {kind} report, found null", field=f"report.{name}")
    for name, level, unit in (("user_level", "user-level", "user"), ("record_level", "record-level", "record")):
        g = report[name]
        if g is None:
            continue
        checks = ((f"report.{name}.ledger.guarantee", g["ledger"]["guarantee"], level),
                  (f"report.{name}.privacy_unit.unit", g["privacy_unit"]["unit"], unit),
                  (f"report.{name}.ledger.adjacency", g["ledger"]["adjacency"], g["adjacency"]))
        for path, found, want in checks:
            if found != want:
                raise ReportSchemaError(f"{path}: expected {want!r} in the {name} section, found {found!r}",
                                        field=path)


def canonical_json(obj: Any) -> bytes:
    """The bytes that are signed: sorted keys, no whitespace, UTF-8, no NaN/Infinity."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def signing_payload(report: Mapping[str, Any]) -> bytes:
    return canonical_json({k: v for k, v in report.items() if k != "signature"})


def sign_report(report: Mapping[str, Any], private_key: Ed25519PrivateKey) -> dict[str, Any]:
    """A copy of `report` with an Ed25519 ``signature`` over everything else (any old signature replaced)."""
    unsigned = {k: v for k, v in report.items() if k != "signature"}
    validate_report({**unsigned, "signature": None})
    signature = private_key.sign(signing_payload(unsigned))
    return {**unsigned, "signature": {
        "algorithm": "Ed25519", "signed_content": SIGNED_CONTENT,
        "public_key": keys.b64(keys.public_key_raw(private_key)),
        "key_fingerprint": keys.fingerprint(private_key), "value": keys.b64(signature)}}


def verify_signature(report: Mapping[str, Any], public_key: Ed25519PublicKey | None = None) -> str:
    """Check the signature; return the signer's fingerprint. Raise `SignatureError` saying what is wrong.

    Without `public_key` the key embedded in the report is used: that proves the report was not changed since
    it was signed, but not *who* signed it. Pass the server's or device's published key to prove that.
    """
    sig = report.get("signature")
    if sig is None:
        raise SignatureError("report.signature: the report is not signed")
    if not isinstance(sig, Mapping) or sig.get("algorithm") != "Ed25519":
        raise SignatureError(f"report.signature: expected an Ed25519 signature block, found {sig!r}")
    try:
        embedded = keys.public_key_from_raw(keys.unb64(str(sig.get("public_key", "")),
                                                       what="report.signature.public_key"))
        value = keys.unb64(str(sig.get("value", "")), what="report.signature.value")
    except KeyFileError as e:
        raise SignatureError(str(e)) from None
    if sig.get("key_fingerprint") != keys.fingerprint(embedded):
        raise SignatureError(f"report.signature.key_fingerprint: {sig.get('key_fingerprint')!r} is not the "
                             f"fingerprint of the embedded key ({keys.fingerprint(embedded)})")
    if public_key is not None and keys.fingerprint(public_key) != keys.fingerprint(embedded):
        raise SignatureError(f"report signed with key {keys.fingerprint(embedded)}, expected "
                             f"{keys.fingerprint(public_key)} (the given public key)")
    try:
        (public_key or embedded).verify(value, signing_payload(report))
    except InvalidSignature:
        raise SignatureError(f"report.signature.value: invalid signature for key {keys.fingerprint(embedded)}: the "
                             f"report was changed after signing, or signed over different bytes") from None
    return keys.fingerprint(embedded)


def report_to_text(report: Mapping[str, Any]) -> str:
    return json.dumps(report, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n"


def write_report(report: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Validate, then write crash-safely as indented JSON (signatures cover canonical JSON, not these bytes)."""
    validate_report(dict(report))
    return atomic_write_bytes(path, report_to_text(report).encode("utf-8"))


def loads_strict(text: str, *, where: str = "report") -> Any:
    """Parse JSON strictly: no NaN/Infinity, no duplicate keys (which could show a verifier one value and a
    reader another). Raises `ReportSchemaError`."""

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in pairs:
            if k in out:
                raise ReportSchemaError(f"{where}: duplicate key {k!r} in a JSON object", field=k)
            out[k] = v
        return out

    def no_constants(name: str) -> Any:
        raise ReportSchemaError(f"{where}: {name} is not valid JSON (epsilon and delta must be finite)", field="")

    try:
        return json.loads(text, object_pairs_hook=no_duplicates, parse_constant=no_constants)
    except json.JSONDecodeError as e:
        raise ReportSchemaError(f"{where}: not valid JSON: {e}", field="") from None


def parse_report(text: str, *, where: str = "report") -> dict[str, Any]:
    """Parse strictly and validate; errors name the field."""
    obj = loads_strict(text, where=where)
    validate_report(obj)
    return obj


def read_report(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate a report file."""
    return parse_report(Path(path).read_text(encoding="utf-8"), where=str(path))


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"
