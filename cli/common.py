"""What every `fedrec` command shares: the console, error exits, `--format`, `--set` pairs and JSON output.

Output formats: `text` (tables for people) or `json` (one document on stdout, nothing else there; progress bars
and notes are off). Each JSON document names its schema (`schema`, `schema_version`); `fedrec schema NAME`
prints the JSON Schema of each.
"""

from __future__ import annotations

import json
import os
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

for _k, _v in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
               "FLWR_TELEMETRY_ENABLED": "0", "RAY_USAGE_STATS_ENABLED": "0"}.items():
    os.environ.setdefault(_k, _v)

console = Console(emoji=False)  # ":cd:" in a hex fingerprint must not become an emoji
err_console = Console(emoji=False, stderr=True)  # messages beside a JSON document on stdout
FORMATS = ("text", "json")

OutputFormat = Annotated[str, typer.Option("--format", help="output: 'text' (tables) or 'json' (one document on "
                                                            "stdout; `fedrec schema` prints its schema)")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="no progress bars (they are drawn only on a terminal)")]
DataFormat = Annotated[str, typer.Option("--data-format", help="the data's format when its name does not say: "
                                         "hetrec, lastfm1k, listenbrainz, csv (also for tab-separated files with a "
                                         "header)")]


def fail(message: str, code: int = 2, *, as_json: bool = False) -> typer.Exit:
    """Print an error (to stderr in JSON mode, so stdout stays one document) and return the exit to raise."""
    if as_json:
        typer.echo(json.dumps({"error": message}), err=True)
    else:
        console.print(f"[red]error:[/red] {escape(message)}", highlight=False)
    return typer.Exit(code)


def check_format(fmt: str) -> bool:
    """True for JSON output; exits 2 on an unknown format (the old `recommend --format` named the history's)."""
    if fmt not in FORMATS:
        hint = " (the history file's format is now --data-format)" if fmt in ("hetrec", "lastfm1k", "listenbrainz",
                                                                             "csv") else ""
        raise fail(f"--format must be 'text' or 'json', found {fmt!r}{hint}")
    return fmt == "json"


def print_json(doc: Any) -> None:
    """One JSON document on stdout (NaN written as null: JSON has no NaN)."""
    from fedrec.shared.run_summary import clean

    typer.echo(json.dumps(clean(doc), indent=2, ensure_ascii=False))


def overrides(pairs: list[str]) -> dict[str, str]:
    """`--set KEY=VALUE` pairs as a mapping (the values are parsed by RunConfig)."""
    out = {}
    for p in pairs:
        if "=" not in p:
            raise typer.BadParameter(f"--set expects KEY=VALUE, found {p!r}")
        k, v = p.split("=", 1)
        out[k.strip()] = v.strip()
    return out
