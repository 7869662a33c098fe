"""summary.json: the run's status from its rounds, and the document against its schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedrec.shared.privacy.report.schema import validate
from fedrec.shared.run_summary import SUMMARY_SCHEMA, build_summary, run_status


@pytest.mark.parametrize(("statuses", "released", "want"), [
    (["ok", "ok"], 2, "completed"),
    (["ok", "failed"], 1, "partial"),
    (["failed", "failed"], 0, "failed"),
    (["ok", "stopped: user-level budget"], 1, "stopped"),
])
def test_status(statuses: list[str], released: int, want: str) -> None:
    assert run_status([{"status": s} for s in statuses], planned=2, released=released) == want


def test_a_failed_run_says_so_and_has_no_nan(tmp_path: Path) -> None:
    """Every round failed: status failed, nothing released, NaN losses written as null; valid by its schema."""
    rows = [{"round": r, "status": "failed", "sampled": 3, "updates": 0, "train_loss": float("nan"),
             "bytes_down_per_client": 10, "bytes_up_per_client": 10} for r in (1, 2)]
    (tmp_path / "rounds.json").write_text(json.dumps(rows))
    doc = build_summary(tmp_path, planned=2, released=0, export=None)
    validate(doc, SUMMARY_SCHEMA, root="summary")
    assert doc["status"] == "failed" and doc["rounds"] == {"planned": 2, "run": 2, "released": 0, "failed": 2}
    assert doc["evaluation"] is None and doc["adapter"] is None and doc["privacy"] is None
    assert "NaN" not in json.dumps(doc)
