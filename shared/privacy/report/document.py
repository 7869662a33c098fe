"""A report as a document: validation against the schema and the run/device rules, its canonical JSON, and
strict reading and crash-safe writing.

Reading is strict (no NaN/Infinity, no duplicate keys), because a verifier and a reader that saw different
values for one key could disagree about what a report says. Errors name the field.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedrec.shared.io import atomic_write_bytes
from fedrec.shared.privacy.errors import ReportInputError, ReportSchemaError
from fedrec.shared.privacy.report.schema import REPORT_SCHEMA, SCHEMA_NAME, SCHEMA_VERSION, validate


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
    except json.JSONDecodeError as e:  # truncated or not JSON: nothing to check, an input error
        raise ReportInputError(f"{where}: not valid JSON: {e}", field="") from None


def parse_report(text: str, *, where: str = "report") -> dict[str, Any]:
    """Parse strictly and validate; errors name the field."""
    obj = loads_strict(text, where=where)
    validate_report(obj)
    return obj


def read_report(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate a report file."""
    return parse_report(Path(path).read_text(encoding="utf-8"), where=str(path))
