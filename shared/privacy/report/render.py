"""Epsilon reports for people: Markdown and a self-contained HTML page (plot embedded as base64 PNG).

Both lead with the plain-words statement (which always names the privacy unit and says what is not covered),
then the scope and trust model, each guarantee's parameters, the epsilon-over-rounds plot and the
release-by-release ledger. The JSON report stays the authority; these are views of it, so they show the
signer's fingerprint but are not signed themselves.

Matplotlib is used through `Figure` + the Agg canvas directly, never `pyplot`: no global backend switch, no
display needed, safe in servers and threads.
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedrec.shared.privacy.distributed_entries import entry_components
from fedrec.shared.privacy.ledger import PrivacyLedger

_SECTIONS = (("user_level", "User-level guarantee"), ("record_level", "Record-level guarantee"))
_NO_USER_LEVEL = ("No user-level guarantee: this run did not apply a user-level mechanism (DP-FedAvg), so "
                  "nothing bounds what the released adapters reveal about a user's listening history as a whole.")


def statements(report: Mapping[str, Any]) -> list[str]:
    """The report's guarantees in plain words, user-level first; says so when there is no user-level one."""
    out = []
    if report["report_type"] == "run" and report.get("user_level") is None:
        out.append(_NO_USER_LEVEL)
    out += [report[name]["statement"] for name, _ in _SECTIONS if report.get(name)]
    if report.get("record_level_across_devices"):
        out.append(report["record_level_across_devices"]["statement"])
    if report.get("empirical_audit"):
        out.append(report["empirical_audit"]["statement"])
    return out


EMPIRICAL_COLUMNS = ("level", "method", "canaries (in)", "guesses in/out", "correct", "confidence", "delta",
                     "lower bound", "claimed ε", "one-shot estimate")


def empirical_rows(report: Mapping[str, Any]) -> list[list[str]]:
    """One row per empirical audit: the measured lower bound beside the claimed epsilon (empty if none)."""
    section = report.get("empirical_audit")
    if not section:
        return []
    rows = []
    for a in section["audits"]:
        est = a.get("estimate")
        rows.append([
            a["level"], a["method"].split(":")[0], f"{a['canaries']} ({a['included']})",
            f"{a['guesses_in']} / {a['guesses_out']}", f"{a['correct']} of {a['guesses']}", f"{a['confidence']:.0%}",
            f"{a['delta']:g}", f"{a['epsilon_lower_bound']:.4g}",
            "none" if a["claimed_epsilon"] is None else f"{a['claimed_epsilon']:.4g}",
            "n/a" if est is None else ("unbounded" if est["epsilon"] is None else f"{est['epsilon']:.4g}"),
        ])
    return rows


def title(report: Mapping[str, Any]) -> str:
    if report["report_type"] == "device":
        runs = (report.get("record_level") or {}).get("runs")
        if runs:
            return (f"Privacy report: device {report['device_id']}, lifetime over {len(runs)} run"
                    f"{'s' if len(runs) != 1 else ''} (current run {report['run_id']})")
        return f"Privacy report: device {report['device_id']} in run {report['run_id']}"
    return f"Privacy report: run {report['run_id']}"


def signer(report: Mapping[str, Any]) -> str:
    sig = report.get("signature")
    return f"Ed25519 key {sig['key_fingerprint']}" if sig else "unsigned"


def ledger_rows(section: Mapping[str, Any]) -> list[dict[str, str]]:
    """One row per release: round ("run/round" in a lifetime ledger), kind, z, q (or "none"), count (steps or 1)
    and the metadata."""
    rows = []
    for entry in PrivacyLedger.from_json(section["ledger"]):
        for z, q, count in entry_components(entry):
            meta = ", ".join(f"{k}={v}" for k, v in sorted(entry.metadata.items())
                             if k not in ("noise_multiplier", "sample_rate", "steps"))
            rows.append({"round": f"{entry.run}/{entry.round}" if entry.run else str(entry.round), "kind": entry.kind,
                         "z": f"{z:g}",
                         "q": "none" if q is None else f"{q:.6g}", "count": str(count), "metadata": meta})
    return rows


def summary_rows(section: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(field, value) pairs of one guarantee, in the order an auditor reads them."""
    acc, mech, samp, comp = section["accounting"], section["mechanism"], section["sampling"], section["composition"]
    cross = ", ".join(f"{c['accountant']}: {c['epsilon']:.6g}" for c in acc["cross_check"]) or "none"
    return [
        ("epsilon (upper bound)", f"{acc['epsilon']:.6g} at delta {acc['delta']:g} ({acc['accountant']})"),
        ("second accountant", cross),
        ("privacy unit", f"{section['privacy_unit']['unit']}: {section['privacy_unit']['description']}"),
        ("contribution bound", section["privacy_unit"]["contribution_bound"]),
        ("adjacency", section["adjacency"]),
        ("mechanism", mech["name"]),
        ("noise multiplier z / clip norm", f"{mech['noise_multiplier']:g} / {mech['clip_norm']:g} "
                                           f"(noise std {mech['noise_multiplier'] * mech['clip_norm']:g} on the sum)"),
        ("clipping", mech["clipping"]),
        ("noise / RNG", f"{mech['noise_distribution']}; {mech['rng']}"),
        ("aggregation weights", mech["aggregation_weights"] or "n/a"),
        ("sampling", f"{samp['method']}: N = {samp['population']}, expected {samp['expected_sample_size']}, "
                     f"q = {samp['sample_rate']}" + (f" ({samp['evidence']})" if samp["evidence"] else "")),
        ("composition", f"{comp['releases']} releases, {comp['rounds_run']} rounds"
                        + (f", {comp['local_steps']} local steps" if comp["local_steps"] is not None else "")
                        + (f", rounds without release {comp['rounds_without_release']}"
                           if comp["rounds_without_release"] else "")),
        ("failed rounds", comp["failed_rounds_policy"]),
        ("accountant settings", ", ".join(f"{k}={_short(v)}" for k, v in acc["accountant_settings"].items())
         or "defaults"),
        ("library versions", ", ".join(f"{k} {v}" for k, v in sorted(acc["library_versions"].items()))),
    ]


def plot_epsilon_png(report: Mapping[str, Any]) -> bytes | None:
    """Epsilon after each round with the reported figure marked; None if no guarantee.

    The curve is drawn with the headline's accountant (the report's `epsilon_by_round`), named on the y axis, so
    it ends at the reported epsilon; cross-check figures are marked apart and labelled with their accountant.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    sections = [(label, report[name]) for name, label in _SECTIONS if report.get(name)]
    if not sections:
        return None
    fig = Figure(figsize=(7, 3.8), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    top = 0.0
    curve_accountants = sorted({g["epsilon_by_round"]["accountant"] for _, g in sections})
    for label, g in sections:
        curve, acc = g["epsilon_by_round"], g["accounting"]
        lifetime = any("run" in p for p in curve["points"])  # a device's lifetime spans runs: number its rounds
        xs = list(range(1, len(curve["points"]) + 1)) if lifetime else [p["round"] for p in curve["points"]]
        ys = [p["epsilon"] for p in curve["points"]]
        ax.plot(xs, ys, marker="o" if len(xs) <= 40 else None, markersize=3,
                label=f"{label.split()[0]} ε after each round ({curve['accountant']})")
        ax.scatter([xs[-1]], [acc["epsilon"]], marker="*", s=120, zorder=3,
                   label=f"reported ε = {acc['epsilon']:.4g} ({acc['accountant']}, δ = {acc['delta']:g})")
        for c in acc["cross_check"]:
            ax.scatter([xs[-1]], [c["epsilon"]], marker="x", s=50, zorder=3,
                       label=f"cross-check ε = {c['epsilon']:.4g} ({c['accountant']})")
        top = max(top, *ys, acc["epsilon"], *(c["epsilon"] for c in acc["cross_check"]))
    ax.set_xlabel("round this device trained in, over all its runs" if lifetime else "round")
    ax.set_ylabel(f"ε (upper bound, {' / '.join(curve_accountants)} accountant)")
    ax.set_ylim(0, top * 1.15 or 1.0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title(title(report), fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def render_markdown(report: Mapping[str, Any], *, plot_href: str | None = None) -> str:
    """The report as Markdown; `plot_href` is where the PNG was written (relative to the .md), if anywhere."""
    lines = [f"# {title(report)}", "",
             f"Created {report['created_at']}; fedrec {report['code_version']['fedrec']}"
             f" (commit {report['code_version']['git_commit'] or 'unknown'}); signed by: {signer(report)}.", "",
             "## Statement", ""]
    for s in statements(report):
        lines += [f"> {_md(s)}", ""]
    scope = report["scope"]
    tm = scope["trust_model"]
    lines += ["## Scope and trust model", "", "| field | value |", "|---|---|",
              f"| DP setting | {_md(scope['dp_setting'])} |",
              f"| server | {_md(tm['server'])} |",
              f"| secure aggregation | {_md(tm['secure_aggregation'] or 'none')} |",
              f"| colluding clients (max) | {_md(str(tm['colluding_clients_max']))} |",
              f"| notes | {_md(tm['notes'] or '-')} |",
              f"| outputs covered | {_md('; '.join(scope['outputs_covered']))} |",
              f"| not covered | {_md('; '.join(scope['not_covered']))} |", ""]
    for name, label in _SECTIONS:
        g = report.get(name)
        if not g:
            continue
        lines += [f"## {label}", "", "| field | value |", "|---|---|"]
        lines += [f"| {_md(k)} | {_md(v)} |" for k, v in summary_rows(g)]
        lines += [""]
        if plot_href:
            lines += [f"![epsilon over rounds]({plot_href})", ""]
        lines += [f"### Ledger ({len(g['ledger']['entries'])} releases)", "",
                  "| round | kind | z | q | count | metadata |", "|---|---|---|---|---|---|"]
        lines += [f"| {r['round']} | {r['kind']} | {r['z']} | {r['q']} | {r['count']} | {_md(r['metadata'])} |"
                  for r in ledger_rows(g)]
        lines += [""]
    if empirical_rows(report):
        lines += ["## Empirical audit (measured lower bound beside the claimed epsilon)", "",
                  "| " + " | ".join(EMPIRICAL_COLUMNS) + " |", "|" + "---|" * len(EMPIRICAL_COLUMNS)]
        lines += ["| " + " | ".join(_md(c) for c in row) + " |" for row in empirical_rows(report)]
        lines += [""]
    return "\n".join(lines)


def render_html(report: Mapping[str, Any]) -> str:
    """A self-contained HTML page (no external resources); every report string is escaped."""
    e = html.escape
    parts = [
        "<!doctype html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{e(title(report))}</title>",
        "<style>body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;"
        "line-height:1.45}blockquote{border-left:4px solid #4a7;margin:1rem 0;padding:.5rem 1rem;"
        "background:#f4faf6}table{border-collapse:collapse;margin:1rem 0;font-size:.9rem}"
        "td,th{border:1px solid #ccc;padding:.25rem .5rem;text-align:left;vertical-align:top}"
        "th{background:#f0f0f0}.meta{color:#555;font-size:.9rem}img{max-width:100%}</style></head><body>",
        f"<h1>{e(title(report))}</h1>",
        f"<p class=\"meta\">Created {e(report['created_at'])}; fedrec {e(report['code_version']['fedrec'])} "
        f"(commit {e(report['code_version']['git_commit'] or 'unknown')}); signed by: {e(signer(report))}.</p>",
        "<h2>Statement</h2>",
    ]
    parts += [f"<blockquote>{e(s)}</blockquote>" for s in statements(report)]
    scope = report["scope"]
    tm = scope["trust_model"]
    parts += ["<h2>Scope and trust model</h2>", _table(["field", "value"], [
        ["DP setting", scope["dp_setting"]], ["server", tm["server"]],
        ["secure aggregation", tm["secure_aggregation"] or "none"],
        ["colluding clients (max)", str(tm["colluding_clients_max"])], ["notes", tm["notes"] or "-"],
        ["outputs covered", "; ".join(scope["outputs_covered"])], ["not covered", "; ".join(scope["not_covered"])]])]
    png = plot_epsilon_png(report)
    for name, label in _SECTIONS:
        g = report.get(name)
        if not g:
            continue
        parts += [f"<h2>{e(label)}</h2>", _table(["field", "value"], [list(r) for r in summary_rows(g)])]
        if png:
            parts.append(f'<img alt="epsilon over rounds" src="data:image/png;base64,'
                         f'{base64.b64encode(png).decode("ascii")}">')
        rows = ledger_rows(g)
        parts += [f"<h3>Ledger ({len(g['ledger']['entries'])} releases)</h3>",
                  _table(["round", "kind", "z", "q", "count", "metadata"],
                         [[r["round"], r["kind"], r["z"], r["q"], r["count"], r["metadata"]] for r in rows])]
    if empirical_rows(report):
        parts += ["<h2>Empirical audit (measured lower bound beside the claimed epsilon)</h2>",
                  _table(list(EMPIRICAL_COLUMNS), empirical_rows(report))]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_rendered(report: Mapping[str, Any], out_dir: str | os.PathLike[str], *, stem: str = "privacy-report"
                   ) -> dict[str, Path]:
    """Write ``<stem>.md``, ``<stem>.html`` and ``<stem>.png`` (if there is a curve) into `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    png = plot_epsilon_png(report)
    if png:
        paths["png"] = out / f"{stem}.png"
        paths["png"].write_bytes(png)
    paths["md"] = out / f"{stem}.md"
    paths["md"].write_text(render_markdown(report, plot_href=f"{stem}.png" if png else None), encoding="utf-8")
    paths["html"] = out / f"{stem}.html"
    paths["html"].write_text(render_html(report), encoding="utf-8")
    return paths


def _table(head: list[str], rows: list[list[str]]) -> str:
    e = html.escape
    return ("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr>"
            + "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>" for row in rows)
            + "</table>")


def _md(text: str) -> str:
    """Escape what would break a Markdown table cell or start markup."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").replace("<", "&lt;")


def _short(v: Any) -> str:
    if isinstance(v, list) and len(v) > 6:
        return f"[{v[0]}, {v[1]}, ..., {v[-1]}] ({len(v)} values)"
    return str(v)
