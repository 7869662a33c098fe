"""The JSON Schemas (draft 2020-12) of every `--format json` document, and `fedrec schema NAME` that prints them.

    summary    fedrec simulate --format json, and <run>/summary.json  (fedrec.shared.run_summary)
    recommend  fedrec recommend --format json
    score      fedrec score --format json
    report     fedrec audit show --format json: the signed privacy report itself (fedrec.shared.privacy.report)

Compatibility: fields are never removed or given a new meaning; a new field bumps `schema_version`.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

RECOMMEND_NAME, SCORE_NAME = "fedrec.recommendations", "fedrec.scores"
_LOAD = {"type": "array", "items": {"type": "string"}, "description": "the history file's load summary lines"}
_ITEM = {"item": {"type": "string", "description": "display name"}, "item_id": {"type": "string"},
         "score": {"type": "number"}}

RECOMMEND_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "fedrec recommend --format json",
    "type": "object",
    "required": ["schema", "schema_version", "user", "history_items", "domain", "recommendations", "load"],
    "properties": {
        "schema": {"const": RECOMMEND_NAME}, "schema_version": {"const": 1},
        "user": {"type": "string"}, "history_items": {"type": "integer", "minimum": 0},
        "domain": {"type": "string"}, "load": _LOAD,
        "recommendations": {"type": "array", "items": {
            "type": "object", "required": ["rank", *_ITEM, "tags", "reasons"],
            "properties": {"rank": {"type": "integer", "minimum": 1}, **_ITEM,
                           "tags": {"type": "array", "items": {"type": "string"}},
                           "reasons": {"type": "array", "items": {"type": "string"}}},
            "additionalProperties": False}},
    },
    "additionalProperties": False,
}

SCORE_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "fedrec score --format json",
    "type": "object",
    "required": ["schema", "schema_version", "user", "history_items", "candidates", "load"],
    "properties": {
        "schema": {"const": SCORE_NAME}, "schema_version": {"const": 1},
        "user": {"type": "string"}, "history_items": {"type": "integer", "minimum": 0}, "load": _LOAD,
        "candidates": {"type": "array", "description": "in the candidates file's order", "items": {
            "type": "object", "required": ["rank", *_ITEM, "in_history"],
            "properties": {"rank": {"type": "integer", "minimum": 1, "description": "1 = best among the candidates"},
                           **_ITEM, "in_history": {"type": "boolean"}},
            "additionalProperties": False}},
    },
    "additionalProperties": False,
}


def schemas() -> dict[str, dict[str, Any]]:
    from fedrec.shared.privacy.report.schema import REPORT_SCHEMA
    from fedrec.shared.run_summary import SUMMARY_SCHEMA

    return {"summary": SUMMARY_SCHEMA, "recommend": RECOMMEND_SCHEMA, "score": SCORE_SCHEMA, "report": REPORT_SCHEMA}


def schema(name: Annotated[str, typer.Argument(help="summary, recommend, score or report")]) -> None:
    """Print the JSON Schema of a `--format json` document."""
    import json

    from fedrec.cli.common import fail

    known = schemas()
    if name not in known:
        raise fail(f"unknown schema {name!r}; expected one of {', '.join(known)}")
    typer.echo(json.dumps(known[name], indent=2))
