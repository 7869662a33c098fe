"""The closing summary of `fedrec simulate` as text, and the demo history it points `fedrec recommend` at."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path
from typing import Any

from fedrec.shared.domain import domain


def example_history(run: Path) -> Path:
    """A demo user for `fedrec recommend`, made from the public catalog only (no user's data): up to 8 items that
    share the catalog's most common top tag."""
    from fedrec.shared.run_dir import read_catalog

    catalog = read_catalog(run)
    top = [t[0] for t in catalog.tags if t]
    tag = Counter(top).most_common(1)[0][0] if top else None
    items = [i for i, t in enumerate(catalog.tags) if t and t[0] == tag][:8] or list(range(min(8, len(catalog))))
    path = run / "example-history.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["user", "item"])
        w.writerows(["demo-user", catalog.item_ids[i]] for i in items)
    return path


def _f(value: Any, spec: str = ".4f") -> str:
    return "n/a" if value is None else format(value, spec)


def _stop_note(run: Path) -> str:
    """"; stopped: <why> before round N (a normal end)" when the run stopped early (its budget), else ""."""
    path = run / "rounds.json"
    rows = json.loads(path.read_text()) if path.is_file() else []
    stop = next((r for r in rows if str(r.get("status", "")).startswith("stopped")), None)
    return f"; {stop['status']} before round {stop['round']} (a normal end)" if stop else ""


def summary_lines(run: Path, doc: dict[str, Any]) -> list[str]:
    """The summary's lines, from the run's summary.json document (plus what the command added)."""
    from fedrec.shared.run_dir import read_config

    rounds, ev, pop = doc["rounds"], doc["evaluation"] or {}, (doc.get("baselines") or {}).get("popularity")
    bytes_ = doc["bytes_per_client"] or {}
    cfg = read_config(run)
    lines = [
        f"run directory   {run}",
        f"status          {doc['status']}: "
        + (f"{', '.join(doc['statistics'])} released; " if doc.get("statistics") else "")
        + f"{rounds['released']}/{rounds['planned']} adapter rounds released an update, in "
        f"{_f(doc.get('seconds'), '.0f')} s" + _stop_note(run),
        f"NDCG@10 / HR@10 {_f(ev.get('ndcg@10'))} / {_f(ev.get('hr@10'))} (full ranking, {ev.get('users', 0)} users)",
        f"sampled (99 neg) {_f(ev.get('ndcg@10_sampled'))} NDCG@10, coverage@10 {_f(ev.get('coverage@10'), '.3f')}",
    ]
    if pop:
        lines.append(f"popularity      {_f(pop['ndcg@10'])} / {_f(pop['hr@10'])} NDCG@10 / HR@10 on the same split "
                     "(centralized reference)")
    lines += [
        f"bytes/client    {_f(bytes_.get('down', 0) / 1e6, '.2f')} MB down, {_f(bytes_.get('up', 0) / 1e6, '.2f')} MB "
        "up per round",
    ]
    if doc.get("adapter"):
        lines.append(f"adapter         {run / doc['adapter']}")
    if doc.get("export"):
        lines.append(f"model           {run / doc['export']} (PEFT adapter + model card; fedrec export)")
    noun = domain(cfg.data.domain).item
    lines.append(f"try             fedrec recommend --run {run} --history {doc['example_history']}  (a demo {noun} "
                 "list)")
    if doc.get("privacy"):
        lines.append(f"privacy report  {run / 'privacy-report.html'} (verify: fedrec audit verify "
                     f"{run / 'privacy-report.json'} --public-key {run / 'server-ed25519.pub'})")
    else:
        lines.append("privacy         none claimed (no DP options were on)")
    if (run / "audit" / "results.json").is_file():  # fedrec.server.empirical_audit
        for a in json.loads((run / "audit" / "results.json").read_text())["audits"]:
            claimed = "none" if a["claimed_epsilon"] is None else f"{a['claimed_epsilon']:.4g}"
            lines.append(f"audit           {a['level']}: measured ε >= {a['epsilon_lower_bound']:.4g} "
                         f"({a['correct']}/{a['guesses']} guesses on {a['canaries']} canaries, "
                         f"{a['confidence']:.0%}), claimed ε {claimed}")
    return lines
