"""A device state directory from before the lifetime ledger (one run, entries without a run id) migrates: its
entries get the run's id, the original file is kept, a crash during the migration is redone, and the next run
continues the same ledger."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fedrec.client.device_state import LEDGER_V1, DeviceState, RoundRecord
from fedrec.shared.io import atomic_write_text
from fedrec.shared.privacy.errors import LedgerError
from fedrec.shared.privacy.ledger import PrivacyLedger

SUBJECT = "phone-1"


def _v1_ledger(rounds: list[int]) -> PrivacyLedger:
    ledger = PrivacyLedger(guarantee="record-level", subject=SUBJECT)
    for r in rounds:
        ledger.record_local_dpsgd(round=r, noise_multiplier=1.0, sample_rate=0.25, steps=4)
    return ledger


def _old_state_dir(root: Path, *, file_rounds: list[int], record_rounds: list[int] | None) -> DeviceState:
    """What a device of the per-run design left: a version-1 ledger, its report and (maybe) its round record."""
    store = DeviceState(root)
    _v1_ledger(file_rounds).save(store.ledger_path)
    atomic_write_text(store.report_path, json.dumps({"run_id": "old-run"}))
    if record_rounds is not None:
        store.save_round(RoundRecord(run_id="old-run", server_round=record_rounds[-1], global_sha256="0" * 64,
                                     secagg_session="", metrics={}, update={"w": np.zeros(2, np.float32)},
                                     ledger=_v1_ledger(record_rounds).dumps()))
    return store


def test_a_per_run_state_dir_migrates_to_the_lifetime_ledger(tmp_path: Path) -> None:
    # Prepare
    store = _old_state_dir(tmp_path, file_rounds=[1, 2], record_rounds=[1, 2])
    original = store.ledger_path.read_bytes()
    # Execute
    ledger = store.load_ledger(subject=SUBJECT)
    # Assert: every entry now belongs to the run it was charged in; nothing lost, nothing added
    assert [e.key for e in ledger] == [("old-run", 1, 0), ("old-run", 2, 0)]
    assert PrivacyLedger.load(store.ledger_path) == ledger and ledger.to_json()["version"] == 2
    assert (tmp_path / LEDGER_V1).read_bytes() == original
    assert [e.event for e in ledger] == [e.event for e in PrivacyLedger.loads(original.decode())]
    assert store.load_ledger(subject=SUBJECT) == ledger  # idempotent
    ledger.check_next(run="new-run", round=1)  # the next run continues the same ledger
    with pytest.raises(LedgerError, match="already in the ledger"):
        ledger.check_next(run="old-run", round=2)


def test_a_crash_after_the_old_version_committed_a_round_is_rolled_forward_and_migrated(tmp_path: Path) -> None:
    """Killed (under the per-run design) after committing round 3 but before rewriting the ledger file."""
    store = _old_state_dir(tmp_path, file_rounds=[1, 2], record_rounds=[1, 2, 3])
    ledger = store.load_ledger(subject=SUBJECT)
    assert [e.key for e in ledger] == [("old-run", r, 0) for r in (1, 2, 3)]
    assert PrivacyLedger.load(store.ledger_path) == ledger


def test_a_crash_during_the_migration_is_redone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed after the copy of the old file and before the new one: the next load migrates again."""
    store = _old_state_dir(tmp_path, file_rounds=[1], record_rounds=None)
    original = store.ledger_path.read_bytes()

    def killed(self, ledger):
        raise KeyboardInterrupt("killed while migrating")

    monkeypatch.setattr(DeviceState, "save_ledger", killed)
    with pytest.raises(KeyboardInterrupt):
        store.load_ledger(subject=SUBJECT)
    assert store.ledger_path.read_bytes() == original  # the old file is still the ledger
    monkeypatch.undo()
    assert [e.key for e in store.load_ledger(subject=SUBJECT)] == [("old-run", 1, 0)]  # from the report's run id
    assert (tmp_path / LEDGER_V1).read_bytes() == original
