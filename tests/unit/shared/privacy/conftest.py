"""Fixtures for the privacy tests: small ledgers and signed reports (built once per session, copied per test)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from fedrec.shared.privacy import (
    GuaranteeInputs,
    Mechanism,
    PrivacyLedger,
    Sampling,
    Scope,
    build_device_report,
    build_run_report,
    sign_report,
)
from fedrec.shared.privacy.keys import Ed25519PrivateKey, generate_private_key

WHEN = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
CODE = {"fedrec": "0.1.0", "git_commit": "0" * 40}
# User-level: 8 rounds run, round 5 released nothing; Poisson sampling of 20 out of 2000 users.
USERS, CLIENTS, Z_USER, ROUNDS, SKIPPED = 2000, 20, 1.2, 8, (5,)
# Record-level: one device with 300 records, expected batch 15, trained in rounds 1, 4 and 6.
RECORDS, BATCH, Z_REC, DEVICE_ROUNDS, STEPS = 300, 15, 1.0, (1, 4, 6), (20, 20, 18)


def user_ledger() -> PrivacyLedger:
    ledger = PrivacyLedger(guarantee="user-level", subject="run-test")
    for r in range(1, ROUNDS + 1):
        if r not in SKIPPED:
            ledger.record_user_level_release(round=r, noise_multiplier=Z_USER, sample_rate=CLIENTS / USERS,
                                             clip_norm=1.0, clients_aggregated=CLIENTS)
    return ledger


def device_ledger() -> PrivacyLedger:
    ledger = PrivacyLedger(guarantee="record-level", subject="device-7")
    for r, steps in zip(DEVICE_ROUNDS, STEPS, strict=True):
        ledger.record_local_dpsgd(round=r, noise_multiplier=Z_REC, sample_rate=BATCH / RECORDS, steps=steps,
                                  max_grad_norm=0.5, num_records=RECORDS)
    return ledger


def make_run_report(**overrides: Any) -> dict[str, Any]:
    inputs = dict(ledger=user_ledger(),
                  mechanism=Mechanism.dp_fedavg(noise_multiplier=Z_USER, clip_norm=1.0,
                                                rng="torch.Generator seeded from secrets (not a CSPRNG)"),
                  sampling=Sampling.poisson(population=USERS, expected_sample_size=CLIENTS,
                                            evidence="server log of per-round coin flips"),
                  delta=2e-5, rounds_run=ROUNDS, rounds_without_release=SKIPPED, accountant="rdp",
                  cross_check=("pld",))
    inputs.update(overrides)
    return build_run_report(
        run_id="run-test", scope=Scope(dp_setting="central DP-FedAvg, server adds the noise"),
        user_level=GuaranteeInputs(**inputs), record_level_epsilons=[0.8, 1.1, 2.5, 0.9],
        record_level_delta=1e-5, record_level_accountant="opacus-prv", created_at=WHEN, code_version=CODE)


def make_device_report(**overrides: Any) -> dict[str, Any]:
    inputs = dict(ledger=device_ledger(),
                  mechanism=Mechanism.dp_sgd(noise_multiplier=Z_REC, max_grad_norm=0.5,
                                             rng="torch default generator (not a CSPRNG)"),
                  sampling=Sampling.poisson(population=RECORDS, sample_rate=BATCH / RECORDS),
                  delta=1e-4, rounds_run=len(DEVICE_ROUNDS), accountant="opacus-prv", cross_check=("rdp", "pld"))
    inputs.update(overrides)
    return build_device_report(run_id="run-test", device_id="device-7",
                               scope=Scope(dp_setting="local DP-SGD (Opacus) on each device"),
                               record_level=GuaranteeInputs(**inputs), created_at=WHEN, code_version=CODE)


@pytest.fixture(scope="session")
def server_key() -> Ed25519PrivateKey:
    return generate_private_key()


@pytest.fixture(scope="session")
def device_key() -> Ed25519PrivateKey:
    return generate_private_key()


@pytest.fixture(scope="session")
def _signed_run_report(server_key: Ed25519PrivateKey) -> dict[str, Any]:
    return sign_report(make_run_report(), server_key)


@pytest.fixture(scope="session")
def _signed_device_report(device_key: Ed25519PrivateKey) -> dict[str, Any]:
    return sign_report(make_device_report(), device_key)


@pytest.fixture
def run_report(_signed_run_report: dict[str, Any]) -> dict[str, Any]:
    """A signed run report (user-level RDP with a PLD cross-check), a fresh copy for each test to change."""
    return copy.deepcopy(_signed_run_report)


@pytest.fixture
def device_report(_signed_device_report: dict[str, Any]) -> dict[str, Any]:
    """A signed device report whose primary figure is Opacus PRV."""
    return copy.deepcopy(_signed_device_report)


@pytest.fixture
def build_run() -> Any:
    """`make_run_report(**overrides)`: an unsigned run report with some GuaranteeInputs replaced."""
    return make_run_report


@pytest.fixture
def build_device() -> Any:
    """`make_device_report(**overrides)`: an unsigned device report with some GuaranteeInputs replaced."""
    return make_device_report


@pytest.fixture
def ledgers() -> Any:
    """Fresh copies of the fixtures' ledgers: `ledgers.user()`, `ledgers.device()`."""

    class _Ledgers:
        user = staticmethod(user_ledger)
        device = staticmethod(device_ledger)

    return _Ledgers
