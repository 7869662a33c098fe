"""`fedrec audit`: verify, show and render epsilon reports. Argument parsing only; the logic is in
`fedrec.shared.privacy.report` (verify, document, render), imported inside each command so `fedrec --help` stays fast.

Exit codes: 0 every check passed (warnings allowed), 1 a check failed, 2 the input could not be read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fedrec.cli.common import OutputFormat, check_format, fail, print_json

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Check and show epsilon reports (signature, schema, recomputed epsilon, consistency).")
console = Console(emoji=False)  # ":cd:" in a hex fingerprint must not become an emoji

_STYLE = {"pass": "green", "fail": "bold red", "warn": "yellow", "skip": "dim"}


@app.command()
def verify(
    report: Annotated[Path, typer.Argument(help="a run or device report (JSON)", exists=True, dir_okay=False)],
    public_key: Annotated[Path | None, typer.Option(help="the signer's Ed25519 public key (PEM); without it the "
                                                         "signature only proves integrity, not who signed")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the findings as JSON (= --format json)")] = False,
    fmt: OutputFormat = "text",
) -> None:
    """Check signature and schema, recompute every epsilon with independent accountants, check consistency."""
    as_json = check_format(fmt) or as_json
    from fedrec.shared.privacy.errors import KeyFileError, ReportInputError
    from fedrec.shared.privacy.keys import load_public_key
    from fedrec.shared.privacy.report import has_failures, verify_report_file

    try:
        key = load_public_key(public_key) if public_key else None
        findings = verify_report_file(report, public_key=key)
    except (KeyFileError, OSError, ReportInputError) as e:  # nothing to check: an input error, not a failed check
        if as_json:
            typer.echo(json.dumps({"error": str(e)}, indent=2))
        else:
            console.print(f"[red]error:[/red] {escape(str(e))}")
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps([f.to_json() for f in findings], indent=2))
    else:
        table = Table(title=escape(f"audit of {report}"), show_lines=False)
        for col in ("check", "result", "evidence"):
            table.add_column(col, overflow="fold")
        for f in findings:
            table.add_row(escape(f.check), f"[{_STYLE[f.status]}]{f.status.upper()}[/]", escape(f.message))
        console.print(table)
        failed = [f.check for f in findings if f.failed]
        console.print(f"[bold red]FAILED[/] {len(failed)} check(s): {escape(', '.join(failed))}" if failed else
                      f"[bold green]OK[/] {len(findings)} checks, no failures")
    if has_failures(findings):
        raise typer.Exit(1)


@app.command()
def show(
    report: Annotated[Path, typer.Argument(help="a run or device report (JSON)", exists=True, dir_okay=False)],
    entries: Annotated[int, typer.Option(help="ledger entries to list (first and last); 0 = all")] = 10,
    fmt: OutputFormat = "text",
) -> None:
    """Print the guarantees in plain words and a summary of each ledger (--format json: the checked report itself,
    schema `fedrec schema report`)."""
    from fedrec.shared.privacy.errors import ReportSchemaError
    from fedrec.shared.privacy.report import read_report
    from fedrec.shared.privacy.report.render import (
        EMPIRICAL_COLUMNS,
        empirical_rows,
        ledger_rows,
        signer,
        statements,
        summary_rows,
        title,
    )

    as_json = check_format(fmt)
    try:
        rep = read_report(report)
    except ReportSchemaError as e:
        raise fail(str(e), as_json=as_json) from None
    if as_json:
        print_json(rep)
        return
    console.print(f"[bold]{escape(title(rep))}[/bold]  ({rep['created_at']}, signed by: {escape(signer(rep))})\n")
    for s in statements(rep):
        console.print(s, soft_wrap=False, markup=False)
        console.print()
    for name in ("user_level", "record_level"):
        g = rep.get(name)
        if not g:
            continue
        summary = Table(title=name.replace("_", "-"), show_header=False)
        summary.add_column("field")
        summary.add_column("value", overflow="fold")
        for k, v in summary_rows(g):
            summary.add_row(escape(str(k)), escape(str(v)))
        console.print(summary)
        rows = ledger_rows(g)
        head = entries // 2
        shown = rows if entries <= 0 or len(rows) <= entries else rows[:head] + rows[-(entries - head):]
        ledger = Table(title=f"ledger: {len(rows)} releases" + ("" if shown is rows else f", {len(shown)} shown"))
        for col in ("round", "kind", "z", "q", "count", "metadata"):
            ledger.add_column(col, overflow="fold")
        for r in shown:
            ledger.add_row(*(escape(str(r[k])) for k in ("round", "kind", "z", "q", "count", "metadata")))
        console.print(ledger)
    if empirical_rows(rep):  # the measured lower bound beside the claimed epsilon, one row per audit
        audit = Table(title="empirical audit (lower bound measured in this run vs claimed epsilon)")
        for col in EMPIRICAL_COLUMNS:
            audit.add_column(col, overflow="fold")
        for row in empirical_rows(rep):
            audit.add_row(*(escape(str(c)) for c in row))
        console.print(audit)


@app.command()
def render(
    report: Annotated[Path, typer.Argument(help="a run or device report (JSON)", exists=True, dir_okay=False)],
    out: Annotated[Path | None, typer.Option(help="output folder (default: next to the report)")] = None,
) -> None:
    """Write the report as Markdown and self-contained HTML, with the epsilon-over-rounds plot."""
    from fedrec.shared.privacy.errors import ReportSchemaError
    from fedrec.shared.privacy.report import read_report
    from fedrec.shared.privacy.report.render import write_rendered

    try:
        rep = read_report(report)
    except ReportSchemaError as e:
        console.print(f"[red]error:[/red] {escape(str(e))}")
        raise typer.Exit(2) from None
    paths = write_rendered(rep, out or report.parent, stem=report.stem)
    for kind, path in paths.items():
        console.print(f"{kind:<5} {path}")


@app.command()
def schema() -> None:
    """Print the report's JSON Schema (draft 2020-12), for validating reports with other tools."""
    from fedrec.shared.privacy.report.schema import REPORT_SCHEMA

    typer.echo(json.dumps(REPORT_SCHEMA, indent=2))
