"""The plain-words statements of a report, and the default texts that describe each privacy unit.

The statements are pure functions of the report's fields, so the verifier can regenerate them and compare: a
figure changed in the report's fields but not in its statement (or the other way round) fails the audit. Each
statement always names the privacy unit, the adversary, the trust model and what is not covered.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fedrec.shared.privacy.accountants import ACCOUNTANTS
from fedrec.shared.privacy.ledger import USER_LEVEL
from fedrec.shared.privacy.report.lifetime import runs_text

# The default texts of a guarantee section, each of which `GuaranteeInputs` can override: how failed rounds are
# counted, the privacy unit and its contribution bound.
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


def _num(x: float) -> str:
    return f"{x:.5g}"


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
        declared = g.get("releases") or []
        if declared:
            span += (" (round 0: " + "; ".join(
                f"{r['name']}, {r['description']}, sensitivity {_num(r['sensitivity'])}, noise std "
                f"{_num(r['noise_multiplier'] * r['sensitivity'])} (z = {_num(r['noise_multiplier'])})"
                for r in declared) + "; every user asked, no amplification; then the adapter rounds)")
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
        if g.get("runs"):  # a lifetime ledger: epsilon covers every run the device took part in
            span += (f", over its lifetime: {len(g['runs'])} run{'s' if len(g['runs']) != 1 else ''} ("
                     f"{runs_text(g['runs'])}; the mechanism above is the current run's)")
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
        f"Mechanism: {mech['name']}; {clip} is clipped to L2 norm {_num(s)} and "
        + (f"each device adds a share of Skellam noise, the shares of at least t survivors summing to standard "
           f"deviation z·{_num(s)} = {_num(z * s)} (z = {_num(z)}) or more per coordinate (the server adds none)"
           if mech.get("noise_distribution") == "skellam" else
           f"Gaussian noise of standard deviation z·{_num(s)} = {_num(z * s)} (z = {_num(z)}) is added to the sum")
        + f"; {sampling}. "
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
