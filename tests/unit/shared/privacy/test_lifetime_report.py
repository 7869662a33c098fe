"""A device report over its lifetime: the runs its ledger spans are listed, each run checked against the ledger,
the curve keyed by (run, round), and `fedrec audit verify` recomputes it all."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from fedrec.shared.privacy import (
    GuaranteeInputs,
    Mechanism,
    PrivacyLedger,
    Sampling,
    Scope,
    build_device_report,
    sign_report,
)
from fedrec.shared.privacy.errors import ReportError
from fedrec.shared.privacy.report import verify_report
from fedrec.shared.privacy.report.render import render_markdown

K, BATCH = 16, 4
# Run "spring" trained rounds 1-2 at z = 1.0, run "summer" (another calibration) rounds 1 and 3 at z = 1.3.
RUNS = (("spring", (1, 2), 1.0), ("summer", (1, 3), 1.3))


def lifetime_ledger() -> PrivacyLedger:
    ledger = PrivacyLedger(guarantee="record-level", subject="phone-7")
    for run, rounds, z in RUNS:
        for r in rounds:
            ledger.record_local_dpsgd(round=r, run=run, noise_multiplier=z, sample_rate=BATCH / K, steps=4,
                                      max_grad_norm=1.0, num_records=K)
    return ledger


def lifetime_report(ledger: PrivacyLedger | None = None, *, z: float = 1.3) -> dict[str, Any]:
    ledger = ledger or lifetime_ledger()
    inputs = GuaranteeInputs(ledger=ledger, mechanism=Mechanism.dp_sgd(noise_multiplier=z, max_grad_norm=1.0,
                                                                      rng="torch generator (not a CSPRNG)"),
                             sampling=Sampling.poisson(population=K, sample_rate=BATCH / K), delta=1e-5,
                             rounds_run=len(ledger.round_keys()), accountant="rdp", cross_check=("pld",))
    return build_device_report(run_id=ledger.runs()[-1], device_id="phone-7",
                               scope=Scope(dp_setting="local DP-SGD (Opacus) on the device"), record_level=inputs)


@pytest.fixture(scope="module")
def signed(device_key_module) -> dict[str, Any]:
    return sign_report(lifetime_report(), device_key_module)


@pytest.fixture(scope="module")
def device_key_module():
    from fedrec.shared.privacy.keys import generate_private_key

    return generate_private_key()


def _failed(report: dict[str, Any]) -> list[str]:
    return [f.check for f in verify_report(report) if f.failed]


def test_a_lifetime_report_lists_its_runs_and_verifies(signed):
    """Every run with its rounds, steps and noise; epsilon composes all four rounds; verify passes."""
    g = signed["record_level"]
    assert [(r["run_id"], r["rounds"], r["noise_multipliers"]) for r in g["runs"]] == \
        [("spring", [1, 2], [1.0]), ("summer", [1, 3], [1.3])]
    assert [(p.get("run"), p["round"]) for p in g["epsilon_by_round"]["points"]] == \
        [("spring", 1), ("spring", 2), ("summer", 1), ("summer", 3)]
    assert g["composition"]["rounds_run"] == 4 and g["composition"]["local_steps"] == 16
    assert g["runs"][-1]["epsilon_after"] == g["epsilon_by_round"]["points"][-1]["epsilon"]
    assert "over its lifetime: 2 runs" in g["statement"]
    assert _failed(signed) == []
    assert "lifetime over 2 runs" in render_markdown(signed) and "summer/3" in render_markdown(signed)


def test_a_lifetime_epsilon_is_more_than_the_current_runs_alone(signed):
    """The figure is the device's lifetime spend: the earlier run's rounds are composed in."""
    ledger = PrivacyLedger(guarantee="record-level", subject="phone-7")
    for e in lifetime_ledger():
        if e.run == "summer":
            ledger.append(round=e.round, run=e.run, event=e.event, metadata=e.metadata)
    alone = lifetime_report(ledger)["record_level"]["accounting"]["epsilon"]
    assert signed["record_level"]["accounting"]["epsilon"] > alone * 1.2


@pytest.mark.parametrize("mutate, check", [
    (lambda g: g["runs"].pop(0), "record_level.ledger.runs"),
    (lambda g: g["runs"][0].update(local_steps=4), "record_level.ledger.runs"),
    (lambda g: g["runs"][1].update(noise_multipliers=[2.0]), "record_level.ledger.runs"),
    (lambda g: g.pop("runs"), "record_level.ledger.runs"),
    (lambda g: g["ledger"]["entries"].pop(0), "record_level.ledger.rounds"),
    (lambda g: g["epsilon_by_round"]["points"][2].update(run="spring"), "record_level.epsilon.by_round"),
    (lambda g: g["ledger"]["entries"][3].update(run="spring"), "record_level.ledger.parse"),
])
def test_tampering_with_the_lifetime_fails_verification(signed, mutate, check):
    """An auditor (no key pinned, signature aside) sees any change to the runs, ledger or curve."""
    report = copy.deepcopy(signed)
    mutate(report["record_level"])
    assert check in _failed(report)


def test_the_declared_mechanism_is_the_current_runs():
    """Declaring the first run's noise for a device now configured with the second run's is refused."""
    with pytest.raises(ReportError, match="mechanism.noise"):
        lifetime_report(z=1.0)
