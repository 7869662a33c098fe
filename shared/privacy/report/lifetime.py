"""A device's lifetime in its report: the runs its ledger spans, one summary per run, and the checks on them.

A device's record-level budget is a lifetime budget, so its ledger holds every run it trained in, each entry keyed
by (run, round, release) (`fedrec.shared.privacy.ledger`, version 2). Its report states the lifetime epsilon
(every entry composed) and lists the runs in the guarantee section's optional ``runs``: per run its rounds,
releases, DP-SGD steps, the noise multipliers and sample rates its releases used, and the epsilon after its last
round on the report's epsilon-over-rounds curve. The curve's points carry their run id (``run``), since round 1
of the second run follows the last round of the first.

The declared mechanism and sampling are the current run's (the last one): those fields describe how the device is
configured now. Earlier runs may have used other settings (a run's target epsilon calibrates its own noise), so
"noise as configured" and "sampling as declared" check the current run's releases against the declared figures
and every run's releases against its summary; the accountant composes the events as recorded whatever they were.

Ledgers without run ids (a run's user-level ledger, a device report from before the lifetime ledger) have no
``runs`` and their points no ``run``: such reports are exactly what they were.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from fedrec.shared.privacy.events import GaussianComponent, gaussian_components
from fedrec.shared.privacy.ledger import PrivacyLedger


def has_runs(ledger: PrivacyLedger) -> bool:
    """Whether the ledger keys its entries by run (a device's lifetime ledger)."""
    return any(e.run for e in ledger)


def curve_point(key: tuple[str, int], epsilon: float) -> dict[str, Any]:
    """One point of the epsilon-over-rounds curve; `run` only for ledgers with runs."""
    run, rnd = key
    return {"round": rnd, "epsilon": epsilon, **({"run": run} if run else {})}


def point_key(point: Mapping[str, Any]) -> tuple[str, int]:
    return str(point.get("run", "")), int(point["round"])


def format_keys(keys: Sequence[tuple[str, int]]) -> str:
    """(run, round) keys for a message: "run A rounds 1..3; run B round 1"."""
    parts: list[str] = []
    for run in dict.fromkeys(k[0] for k in keys):
        rounds = [r for k_run, r in keys if k_run == run]
        span = f"{rounds[0]}..{rounds[-1]}" if rounds == list(range(rounds[0], rounds[-1] + 1)) else str(rounds)
        parts.append((f"run {run} " if run else "") + ("round " if len(rounds) == 1 else "rounds ") + span)
    return "; ".join(parts) or "none"


def run_components(ledger: PrivacyLedger, run: str) -> list[GaussianComponent]:
    """The Gaussian components (z, q, count) of every release of `run`."""
    return [c for e in ledger if e.run == run for c in gaussian_components(e.event)]


def current_run_components(ledger: PrivacyLedger) -> list[GaussianComponent]:
    """The components of the releases the declared mechanism describes: the last run's, or all without runs."""
    if not has_runs(ledger):
        return [c for e in ledger for c in gaussian_components(e.event)]
    return run_components(ledger, ledger.runs()[-1])


def run_summaries(ledger: PrivacyLedger, points: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One summary per run, in ledger order (the report's ``runs``); `points` is the report's curve."""
    after = {point_key(p): p["epsilon"] for p in points}
    out = []
    for run in ledger.runs():
        entries = [e for e in ledger if e.run == run]
        comps = run_components(ledger, run)
        rounds = list(dict.fromkeys(e.round for e in entries))
        out.append({"run_id": run, "rounds": rounds, "releases": len(entries),
                    "local_steps": sum(c.count for c in comps),
                    "noise_multipliers": sorted({c.noise_multiplier for c in comps}),
                    "sample_rates": sorted({c.sample_rate for c in comps if c.sample_rate is not None}),
                    "epsilon_after": after[(run, rounds[-1])]})
    return out


def runs_problems(ledger: PrivacyLedger, section: Mapping[str, Any]) -> list[str]:
    """What is wrong with a section's ``runs`` against its ledger and curve ([] if nothing)."""
    declared = section.get("runs")
    if not has_runs(ledger):
        return ["the section lists runs but its ledger's entries carry no run id"] if declared is not None else []
    if declared is None:
        return [f"the ledger spans runs {ledger.runs()} but the section lists none (a lifetime report lists its runs)"]
    expected = run_summaries(ledger, section["epsilon_by_round"]["points"]) \
        if _curve_covers(ledger, section) else None
    if expected is None:
        return ["the epsilon-over-rounds curve does not cover every (run, round) of the ledger"]
    problems = []
    if [r["run_id"] for r in declared] != [r["run_id"] for r in expected]:
        return [f"runs {[r['run_id'] for r in declared]} are not the ledger's runs {ledger.runs()}"]
    for got, want in zip(declared, expected, strict=True):
        for key, value in want.items():
            same = math.isclose(got[key], value, rel_tol=1e-12) if key == "epsilon_after" else got[key] == value
            if not same:
                problems.append(f"run {want['run_id']!r}: {key} is {got[key]!r}, the ledger gives {value!r}")
    return problems


def _curve_covers(ledger: PrivacyLedger, section: Mapping[str, Any]) -> bool:
    return {point_key(p) for p in section["epsilon_by_round"]["points"]} >= set(ledger.round_keys())


def runs_text(runs: Sequence[Mapping[str, Any]]) -> str:
    """The runs in plain words, for the guarantee's statement."""
    return "; ".join(f"run {r['run_id']}: {len(r['rounds'])} round{'s' if len(r['rounds']) != 1 else ''}, "
                     f"{r['local_steps']} steps, z = {', '.join(f'{z:.5g}' for z in r['noise_multipliers'])}"
                     for r in runs)
