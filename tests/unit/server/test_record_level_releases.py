"""Record-level DP alone with releases: each device builds its contribution from one item per example slot, adds its
own noise scaled to one slot's effect on it, and charges its lifetime ledger one Gaussian per release before
anything leaves it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedrec.server.releases import run_releases
from fedrec.shared.hybrid.statistics import StatisticSpec, one_per_slot
from fedrec.shared.privacy.keys import load_public_key
from fedrec.shared.privacy.ledger import LOCAL_RELEASE, PrivacyLedger
from fedrec.shared.privacy.report import has_failures, verify_report_file


@pytest.mark.parametrize(("kind", "k", "expected"), [("popularity", 5, math.sqrt(2)),
                                                     ("cooccurrence", 4, math.sqrt(8))])
def test_one_slot_moves_a_contribution_by_at_most_the_record_sensitivity(kind, k, expected) -> None:
    """Removing any one example slot (all its records) from a history changes the one-item-per-slot contribution
    by at most `record_sensitivity`."""
    rng = np.random.default_rng(0)
    items_list = None if kind == "popularity" else np.arange(12)
    spec = StatisticSpec(kind=kind, k=k, catalog_size=20, items=items_list)
    assert spec.record_sensitivity == pytest.approx(expected)
    worst = 0.0
    for _ in range(200):
        items = rng.choice(20, size=int(rng.integers(2, 15)), replace=False)
        counts = rng.integers(1, 6, size=len(items)).astype(float)
        slots = items % 4  # 4 slots, several records each
        full = spec.contribution(*one_per_slot(items, counts, slots))[kind]
        gone = slots != int(rng.choice(slots))
        less = spec.contribution(*one_per_slot(items[gone], counts[gone], slots[gone]))[kind]
        worst = max(worst, float(np.linalg.norm(full.astype(np.float64) - less)))
    assert 0 < worst <= spec.record_sensitivity + 1e-6


def test_devices_add_their_own_noise_and_charge_their_ledgers_once_per_release(small_federation, tmp_path) -> None:
    """Server z = 0, the devices' sums are noisy (not integers), every device ledger holds one local release
    entry per release keyed (run, 0, position), and each device's signed report declares them and verifies."""
    grid, fed = small_federation(**{"record_dp.enabled": True, "record_dp.noise_multiplier": 2.0,
                                    "record_dp.delta": 1e-3, "hybrid.releases": "popularity,cooccurrence",
                                    "hybrid.gram_head": 8, "hybrid.gram_k": 3, "run.rounds": 0,
                                    "run.device_state_dir": str(tmp_path / "devices")})
    out = run_releases(grid, fed, {"popularity": 2.0, "cooccurrence": 2.0})
    assert [o.row["status"] for o, _ in out] == ["ok", "ok"]
    assert all(o.row["release_noise_multiplier"] == 0.0 for o, _ in out)  # the server adds nothing
    assert all(o.row["release_local_noise_multiplier"] == 2.0 for o, _ in out)
    counts = out[0][1]["popularity.counts"]
    assert not np.allclose(counts, np.round(counts))  # 6 users' 0/1 indicators summed would be integers
    ledgers = sorted((tmp_path / "devices").glob("*/record-ledger.json"))
    assert len(ledgers) == 6
    for path in ledgers:
        ledger = PrivacyLedger.load(path)
        assert [(e.kind, e.round, e.release, e.metadata["release"]) for e in ledger] == [
            (LOCAL_RELEASE, 0, 0, "popularity"), (LOCAL_RELEASE, 0, 1, "cooccurrence")]
        assert ledger.entries[0].metadata["clip_norm"] == pytest.approx(math.sqrt(2))
        key = load_public_key(path.parent / "device-ed25519.pem.pub")
        findings = verify_report_file(path.parent / "privacy-report.json", public_key=key)
        assert not has_failures(findings), [f for f in findings if f.status == "fail"]
        assert any(f.check.endswith("releases.declared") and f.status == "pass" for f in findings)


def test_without_a_local_noise_multiplier_a_device_refuses_instead_of_sending_exact_sums(small_federation,
                                                                                          tmp_path) -> None:
    """Record-level DP alone and z = 0 for a release: every device fails it (an error code), nothing is released."""
    grid, fed = small_federation(**{"record_dp.enabled": True, "record_dp.delta": 1e-3,
                                    "hybrid.releases": "popularity", "run.rounds": 0})
    (outcome, new), = run_releases(grid, fed, {"popularity": 0.0})
    assert outcome.row["updates"] == 0 and outcome.row["failed"] == 6 and new == {}
