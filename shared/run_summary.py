"""`summary.json`: a run's outcome in one machine-readable document (what `fedrec simulate --format json` prints).

The server writes it when a run ends, successful or not, so a run started by `flwr run .` (whose exit code says
nothing about the rounds: Flower exits 0 when every round failed) can be judged by reading it. `status`:

- `completed`: every planned round ran and released an update (a run of 0 adapter rounds: its statistics were
  released, `statistics`);
- `partial`: every planned round ran, some released nothing (no client answered, a secure sum aborted);
- `stopped`: the run stopped early (the user-level budget), after at least one release;
- `failed`: no round released an update and no statistic was released; the adapter is the untrained start (a
  failed run also raises `AllRoundsFailed`, so `fedrec simulate` exits 1 and Flower marks the run failed).

`fedrec simulate` adds what it measured around the run (`seconds`, the popularity `baselines` on the same split,
`example_history`). The fields and their types are `SUMMARY_SCHEMA` (`fedrec schema summary`); numbers that
were not measured are null, never NaN.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from fedrec.shared.io import atomic_write_text

SUMMARY_FILE = "summary.json"
SCHEMA_NAME = "fedrec.run-summary"
SCHEMA_VERSION = 1
STATUSES = ("completed", "partial", "stopped", "failed")
EVAL_KEYS = ("ndcg@10", "hr@10", "ndcg@10_sampled", "hr@10_sampled", "coverage@10")

_NUM = {"type": ["number", "null"]}
_GUARANTEE = {"type": ["object", "null"], "required": ["epsilon", "delta", "accountant", "unit"],
              "properties": {"epsilon": {"type": "number"}, "delta": {"type": "number"},
                             "accountant": {"type": "string"}, "unit": {"type": "string"}},
              "additionalProperties": False}
SUMMARY_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "fedrec run summary (summary.json, fedrec simulate --format json)",
    "type": "object",
    "required": ["schema", "schema_version", "run_dir", "status", "rounds", "evaluation", "bytes_per_client",
                 "adapter", "export", "privacy"],
    "properties": {
        "schema": {"const": SCHEMA_NAME},
        "schema_version": {"const": SCHEMA_VERSION},
        "run_dir": {"type": "string"},
        "status": {"enum": list(STATUSES)},
        "rounds": {"type": "object", "required": ["planned", "run", "released", "failed"],
                   "properties": {k: {"type": "integer", "minimum": 0} for k in ("planned", "run", "released",
                                                                                  "failed")},
                   "additionalProperties": False},
        "evaluation": {"type": ["object", "null"], "required": ["round", "users", *EVAL_KEYS],
                       "properties": {"round": {"type": "integer"}, "users": {"type": "integer"},
                                      **{k: _NUM for k in EVAL_KEYS}},
                       "additionalProperties": False},
        "bytes_per_client": {"type": ["object", "null"], "required": ["down", "up"],
                             "properties": {"down": {"type": "integer"}, "up": {"type": "integer"}},
                             "additionalProperties": False},
        "adapter": {"type": ["string", "null"]},
        "export": {"type": ["string", "null"]},
        "privacy": {"type": ["object", "null"], "required": ["report", "user_level", "record_level"],
                    "properties": {"report": {"type": "string"}, "user_level": _GUARANTEE,
                                   "record_level": _GUARANTEE},
                    "additionalProperties": False},
        "audit": {"type": ["array", "null"], "items": {"type": "object"}},
        "statistics": {"type": "array", "items": {"type": "string"}},
        "seconds": _NUM,
        "baselines": {"type": "object", "additionalProperties": {"type": "object"}},
        "example_history": {"type": ["string", "null"]},
    },
    "additionalProperties": False,
}


def clean(value: Any) -> Any:
    """NaN and infinities -> None, recursively (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    return value


def run_status(rounds: list[dict[str, Any]], planned: int, released: int, statistics: int = 0) -> str:
    """`completed`, `partial`, `stopped` or `failed` (see the module docstring)."""
    if planned == 0 and statistics:
        return "completed"
    if released == 0:
        return "failed"
    if any(str(r.get("status", "")).startswith("stopped") for r in rounds):
        return "stopped"
    return "completed" if released == planned and len(rounds) == planned else "partial"


def _guarantee(section: dict[str, Any] | None) -> dict[str, Any] | None:
    if not section:
        return None
    acc = section["accounting"]
    return {"epsilon": acc["epsilon"], "delta": acc["delta"], "accountant": acc["accountant"],
            "unit": section["privacy_unit"]["unit"]}


def build_summary(run: Path, *, planned: int, released: int, export: Path | None) -> dict[str, Any]:
    """The summary of the run directory `run` from its published files (rounds.json, the report, the audit)."""
    rounds = json.loads((run / "rounds.json").read_text()) if (run / "rounds.json").is_file() else []
    phase0 = json.loads((run / "releases.json").read_text()) if (run / "releases.json").is_file() else []
    statistics = [str(r["release"]) for r in phase0 if r.get("release") and r.get("status") in ("ok", "noise only")]
    # the last evaluation: of the last adapter round, else round 0's (the released statistics and the text tower)
    last = next((r for r in reversed(phase0 + rounds) if "eval_ndcg@10" in r), None)
    evaluation = None if last is None else {"round": int(last["round"]), "users": int(last.get("eval_users", 0)),
                                            **{k: last.get(f"eval_{k}") for k in EVAL_KEYS}}
    trained = [r for r in rounds if "bytes_down_per_client" in r]
    privacy = None
    if (run / "privacy-report.json").is_file():
        report = json.loads((run / "privacy-report.json").read_text())
        privacy = {"report": "privacy-report.json", "user_level": _guarantee(report.get("user_level")),
                   "record_level": _guarantee(report.get("record_level"))}
    audit = None
    if (run / "audit" / "results.json").is_file():
        audit = [{k: a.get(k) for k in ("level", "epsilon_lower_bound", "claimed_epsilon", "correct", "guesses",
                                         "canaries", "confidence")}
                 for a in json.loads((run / "audit" / "results.json").read_text())["audits"]]
    doc = {
        "schema": SCHEMA_NAME, "schema_version": SCHEMA_VERSION, "run_dir": str(run),
        "status": run_status(rounds, planned, released, len(statistics)),
        "rounds": {"planned": planned, "run": sum("updates" in r for r in rounds), "released": released,
                   "failed": sum("updates" in r and r.get("status") not in ("ok", "noise only") for r in rounds)},
        "evaluation": evaluation,
        "bytes_per_client": None if not trained else {"down": int(trained[-1]["bytes_down_per_client"]),
                                                      "up": int(trained[-1]["bytes_up_per_client"])},
        "adapter": "adapter.safetensors" if (run / "adapter.safetensors").is_file() else None,
        "export": export.name if export is not None else None,
        "privacy": privacy,
        "audit": audit,
        "statistics": statistics,
    }
    return clean(doc)


def write_summary(run: Path, doc: dict[str, Any]) -> None:
    atomic_write_text(run / SUMMARY_FILE, json.dumps(clean(doc), indent=2, ensure_ascii=False) + "\n")


def read_summary(run: Path) -> dict[str, Any]:
    path = run / SUMMARY_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no run summary (the run did not end, or predates summary.json)")
    return json.loads(path.read_text())
