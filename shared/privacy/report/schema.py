"""The epsilon report's schema (version 1), written as JSON Schema, and the small validator fedrec uses for it.

The schema is plain JSON Schema (draft 2020-12), so an auditor can validate a report with any JSON Schema tool
(`REPORT_SCHEMA` is what `fedrec audit schema` would print). fedrec itself validates with the ~80 lines below
instead of a dependency: they implement the keywords the schema uses (type, enum, const, properties,
required, additionalProperties, items, minimum/maximum and their exclusive forms, minLength, pattern, anyOf,
local $ref) and produce errors that name the field, the expectation and the value found, for example
``report.user_level.accounting.delta: expected number, found string '1e-5'``.

Compatibility: a report's ``schema_version`` is 1 for this schema. Fields are never removed or given a new
meaning; adding an optional field bumps the version, and readers accept every version they know. A reader
refuses a version newer than it knows. Two exceptions, kept at version 1 on purpose: the optional top-level
``empirical_audit`` (run reports of audited runs), and a device's lifetime (a guarantee's ``runs``, a curve
point's ``run``, a ledger entry's ``run`` and ``release``: `fedrec.shared.privacy.report.lifetime`). Reports
without them are byte-for-byte what they were; a fedrec from before them refuses a report that has them
("unknown field"), which is the safe failure.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from fedrec.shared.privacy.errors import ReportSchemaError

SCHEMA_NAME = "fedrec.privacy-report"
SCHEMA_VERSION = 1
SIGNED_CONTENT = "fedrec-canonical-json-v1: the report without 'signature', sorted keys, no whitespace, UTF-8"

_STR = {"type": "string"}
_TEXT = {"type": "string", "minLength": 1}
_STRS = {"type": "array", "items": {"type": "string"}}
_OBJ = {"type": "object"}
_INT0 = {"type": "integer", "minimum": 0}
_EPS = {"type": "number", "minimum": 0}
_DELTA = {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1}
_ADJACENCY = {"enum": ["add_or_remove_one", "replace_one", "replace_special"]}


def _obj(required: dict[str, Any], optional: dict[str, Any] | None = None, *, extra: bool = False) -> dict[str, Any]:
    """An object schema whose `required` fields must all be present; no other fields unless `extra`."""
    return {"type": "object", "required": list(required), "properties": {**required, **(optional or {})},
            "additionalProperties": extra}


_ACCOUNTANT_FIGURE = _obj({"accountant": _TEXT, "accountant_settings": _OBJ, "epsilon": _EPS})

_LEDGER = _obj({
    "format": {"const": "fedrec.privacy-ledger"},
    "version": {"type": "integer", "minimum": 1},
    "event_codec": {"type": "integer", "minimum": 1},
    "guarantee": {"enum": ["user-level", "record-level"]},
    "adjacency": _ADJACENCY,
    "subject": _STR,
    "entries": {"type": "array", "items": _obj(
        {"round": _INT0, "kind": {"enum": ["user-level release", "local DP-SGD", "local release"]},
         "event": {"type": "object", "required": ["dp_event"]}},
        {"metadata": _OBJ, "run": _TEXT, "release": _INT0})},  # run, release: ledger version 2 (lifetime)
})

# Optional (device reports with a lifetime ledger, `fedrec.shared.privacy.report.lifetime`): the runs it spans.
_RUN = _obj({"run_id": _TEXT, "rounds": {"type": "array", "items": _INT0}, "releases": _INT0, "local_steps": _INT0,
             "noise_multipliers": {"type": "array", "items": _EPS},
             "sample_rates": {"type": "array", "items": _EPS}, "epsilon_after": _EPS})

_GUARANTEE = _obj({
    "statement": _TEXT,
    "privacy_unit": _obj({"unit": {"enum": ["user", "record"]}, "description": _TEXT, "contribution_bound": _TEXT}),
    "adjacency": _ADJACENCY,
    "mechanism": _obj({
        "name": _TEXT,
        "noise_multiplier": {"type": "number", "minimum": 0},
        "clip_norm": {"type": "number", "exclusiveMinimum": 0},
        "clipping": _TEXT,
        "noise_distribution": _TEXT,
        "aggregation_weights": {"type": ["string", "null"]},
        "rng": _TEXT,
    }),
    "sampling": _obj({
        "method": {"enum": ["poisson", "none"]},
        "population": {"type": "integer", "minimum": 1},
        "expected_sample_size": {"type": ["number", "null"], "exclusiveMinimum": 0},
        "sample_rate": {"type": ["number", "null"], "exclusiveMinimum": 0, "maximum": 1},
        "evidence": _STR,
    }),
    "composition": _obj({
        "rounds_run": _INT0,
        "releases": _INT0,
        "rounds_without_release": {"type": "array", "items": _INT0},
        "local_steps": {"type": ["integer", "null"], "minimum": 0},
        "failed_rounds_policy": _TEXT,
    }),
    "accounting": _obj({
        "accountant": _TEXT,
        "accountant_settings": _OBJ,
        "delta": _DELTA,
        "epsilon": _EPS,
        "epsilon_is_upper_bound": {"const": True},
        "cross_check": {"type": "array", "items": _ACCOUNTANT_FIGURE},
        "library_versions": {"type": "object", "additionalProperties": _STR},
    }),
    "epsilon_by_round": _obj({
        "accountant": _TEXT,
        "accountant_settings": _OBJ,
        "points": {"type": "array", "items": _obj({"round": _INT0, "epsilon": _EPS}, {"run": _TEXT})},
    }),
    "ledger": _LEDGER,
}, {
    "releases": {"type": "array", "items": _obj({
        "name": _TEXT, "noise_multiplier": {"type": "number", "exclusiveMinimum": 0},
        "sensitivity": {"type": "number", "exclusiveMinimum": 0}, "description": _TEXT, "participation": _TEXT})},
    "runs": {"type": "array", "items": _RUN},
})

_ACROSS_DEVICES = _obj({
    "statement": _TEXT,
    "source": _TEXT,
    "devices": {"type": "integer", "minimum": 1},
    "delta": _DELTA,
    "accountant": _TEXT,
    "epsilon": _obj({"min": _EPS, "median": _EPS, "p90": _EPS, "max": _EPS}),
})

# Optional (run reports of audited runs only; added without a version bump: a report without it is unchanged).
_PROBABILITY = {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1}
_AUDIT = _obj({
    "level": {"enum": ["record-level", "user-level"]},
    "method": _TEXT,
    "canary": _TEXT,
    "score": _TEXT,
    "canaries": {"type": "integer", "minimum": 1},
    "included": _INT0,
    "inclusion_probability": _PROBABILITY,
    "guesses_in": _INT0,
    "guesses_out": _INT0,
    "guesses": _INT0,
    "correct": _INT0,
    "confidence": _PROBABILITY,
    "delta": {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
    "epsilon_lower_bound": _EPS,
    "claimed_epsilon": {"type": ["number", "null"], "minimum": 0},
    "claimed_source": _TEXT,
}, {
    "audit_seconds": {"type": "number", "minimum": 0},
    "estimate": {"anyOf": [{"type": "null"}, _obj({
        "method": _TEXT,
        "inserted": _INT0,
        "dimension": {"type": "integer", "minimum": 1},
        "mean": {"type": "number"},
        "std": {"type": "number", "exclusiveMinimum": 0},
        "null_std": {"type": "number", "exclusiveMinimum": 0},
        "delta": _DELTA,
        "epsilon": {"type": ["number", "null"], "minimum": 0},
    })]},
    "null_check": {"type": ["object", "null"]},
})

_EMPIRICAL_AUDIT = _obj({
    "statement": _TEXT,
    "confidence": _PROBABILITY,
    "audits": {"type": "array", "items": _AUDIT},
})

_SIGNATURE = _obj({
    "algorithm": {"const": "Ed25519"},
    "signed_content": {"const": SIGNED_CONTENT},
    "public_key": _TEXT,
    "key_fingerprint": {"type": "string", "pattern": "^SHA256:[0-9a-f]{64}$"},
    "value": _TEXT,
})


def _nullable(ref: str) -> dict[str, Any]:
    return {"anyOf": [{"type": "null"}, {"$ref": f"#/$defs/{ref}"}]}


REPORT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://fedrec.invalid/schemas/privacy-report-v1.json",
    "title": "fedrec epsilon report, schema_version 1",
    **_obj({
        "schema": {"const": SCHEMA_NAME},
        "schema_version": {"const": SCHEMA_VERSION},
        "report_type": {"enum": ["run", "device"]},
        "run_id": _TEXT,
        "device_id": {"type": ["string", "null"], "minLength": 1},
        "created_at": {"type": "string",
                       "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$"},
        "code_version": _obj({"fedrec": _TEXT, "git_commit": {"type": ["string", "null"]}}),
        "scope": _obj({
            "dp_setting": _TEXT,
            "trust_model": _obj({
                "server": _TEXT,
                "secure_aggregation": {"type": ["string", "null"]},
                "colluding_clients_max": {"type": ["integer", "null"], "minimum": 0},
                "notes": _STR,
            }),
            "outputs_covered": _STRS,
            "not_covered": _STRS,
        }),
        "user_level": _nullable("guarantee"),
        "record_level": _nullable("guarantee"),
        "record_level_across_devices": _nullable("across_devices"),
        "signature": _nullable("signature"),
    }, {"empirical_audit": _nullable("empirical_audit")}),
    "$defs": {"guarantee": _GUARANTEE, "across_devices": _ACROSS_DEVICES, "signature": _SIGNATURE,
              "empirical_audit": _EMPIRICAL_AUDIT},
}


# ---------------------------------------------------------------------------------------------------------------
# The validator


def validate(instance: Any, schema: Mapping[str, Any] = REPORT_SCHEMA, *, root: str = "report") -> None:
    """Raise `ReportSchemaError` listing every violation; `.field` is the first offending field's path."""
    problems: list[tuple[str, str]] = []
    _check(instance, schema, root, schema, problems)
    if problems:
        lines = [f"{path}: {msg}" for path, msg in problems]
        more = f" (and {len(lines) - 1} more: {'; '.join(lines[1:4])})" if len(lines) > 1 else ""
        raise ReportSchemaError(lines[0] + more, field=problems[0][0], problems=tuple(lines))


_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def _json_type(v: Any) -> str:
    for name in ("null", "boolean", "integer", "number", "string", "array", "object"):
        if _TYPES[name](v):
            return name
    return type(v).__name__


def _found(v: Any) -> str:
    text = repr(v)
    return f"{_json_type(v)} {text if len(text) <= 60 else text[:57] + '...'}"


def _check(v: Any, s: Mapping[str, Any], path: str, root: Mapping[str, Any], out: list[tuple[str, str]]) -> None:
    if "$ref" in s:
        ref = s["$ref"]
        if not ref.startswith("#/$defs/"):
            raise ValueError(f"schema: only local '#/$defs/...' references are supported, found {ref!r}")
        _check(v, root["$defs"][ref.removeprefix("#/$defs/")], path, root, out)
    if "anyOf" in s:
        attempts = []
        for sub in s["anyOf"]:
            errs: list[tuple[str, str]] = []
            _check(v, sub, path, root, errs)
            if not errs:
                break
            attempts.append(errs)
        else:
            mismatch = [len(e) == 1 and e[0][0] == path and e[0][1].startswith("expected ") for e in attempts]
            if all(mismatch):  # no branch had the right type: say which types would do
                wanted = " or ".join(e[0][1].removeprefix("expected ").split(", found")[0] for e in attempts)
                out.append((path, f"expected {wanted}, found {_found(v)}"))
            else:  # report the branch whose type matched, not "matched none of anyOf"
                out.extend(next(e for e, m in zip(attempts, mismatch, strict=True) if not m))
    if "type" in s:
        types = s["type"] if isinstance(s["type"], list) else [s["type"]]
        if not any(_TYPES[t](v) for t in types):
            out.append((path, f"expected {' or '.join(types)}, found {_found(v)}"))
            return
    if "const" in s and (v != s["const"] or type(v) is not type(s["const"])):
        out.append((path, f"expected {s['const']!r}, found {_found(v)}"))
    if "enum" in s and v not in s["enum"]:
        out.append((path, f"expected one of {s['enum']}, found {_found(v)}"))
    if _TYPES["number"](v):
        for key, ok, word in (("minimum", lambda a, b: a >= b, ">="), ("maximum", lambda a, b: a <= b, "<="),
                              ("exclusiveMinimum", lambda a, b: a > b, ">"),
                              ("exclusiveMaximum", lambda a, b: a < b, "<")):
            if key in s and not ok(v, s[key]):
                out.append((path, f"expected a number {word} {s[key]}, found {v!r}"))
        if v != v or v in (float("inf"), float("-inf")):
            out.append((path, f"expected a finite number, found {v!r}"))
    if isinstance(v, str):
        if len(v) < s.get("minLength", 0):
            out.append((path, f"expected a string of at least {s['minLength']} character(s), found {v!r}"))
        if "pattern" in s and not re.search(s["pattern"], v):
            out.append((path, f"expected a string matching {s['pattern']}, found {v!r}"))
    if isinstance(v, list) and "items" in s:
        for i, item in enumerate(v):
            _check(item, s["items"], f"{path}[{i}]", root, out)
    if isinstance(v, dict):
        props = s.get("properties", {})
        for key in s.get("required", []):
            if key not in v:
                out.append((f"{path}.{key}", "missing required field"))
        extra = s.get("additionalProperties", True)
        for key, item in v.items():
            if key in props:
                _check(item, props[key], f"{path}.{key}", root, out)
            elif extra is False:
                out.append((f"{path}.{key}", f"unknown field; expected only {sorted(props)}"))
            elif isinstance(extra, Mapping):
                _check(item, extra, f"{path}.{key}", root, out)
