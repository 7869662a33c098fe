"""`fedrec recommend | score | export`: use a trained model. Argument parsing and printing only; the scores come
from `fedrec.shared.api.Recommender` (one scoring entry point, `fedrec.shared.model.scoring.score_histories`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from fedrec.cli.common import DataFormat, OutputFormat, check_format, console, fail, print_json
from fedrec.cli.schemas import RECOMMEND_NAME, SCORE_NAME

Model = Annotated[Path | None, typer.Option("--run", help="a run directory, its model/ export (or any `fedrec "
                                                          "export` folder)")]
StateDir = Annotated[Path | None, typer.Option(help="a deployed device's state directory (offline: its last global "
                                                    "adapter, catalog and run settings)")]
HistoryFile = Annotated[Path, typer.Option(help="one user's history file (any supported format)")]
User = Annotated[str, typer.Option(help="the user to read, if the file holds several")]


def _load(run: Path | None, state_dir: Path | None, as_json: bool) -> Any:
    from fedrec.shared.api import Recommender

    if (run is None) == (state_dir is None):
        raise fail("give exactly one of --run RUN (a run or export directory) and --state-dir DIR (a deployed "
                   "device's state directory)", as_json=as_json)
    try:
        return Recommender.load(run or state_dir)  # a device's state dir reads like a run dir
    except (FileNotFoundError, ValueError) as e:
        raise fail(str(e), as_json=as_json) from None


def _history(rec: Any, path: Path, data_format: str, user: str, as_json: bool) -> tuple[Any, Any]:
    from fedrec.shared.data.load import load_history
    from fedrec.shared.data.types import DataFormatError

    try:
        hist, summary = load_history(path, rec.catalog, data_format or None, user=user or None)
    except (DataFormatError, FileNotFoundError, ValueError) as e:
        raise fail(str(e), as_json=as_json) from None
    if len(hist) == 0:
        raise fail(f"{path}: no item of user {hist.user_id!r} is in the model's catalog; "
                   + "; ".join(summary.lines()), as_json=as_json)
    if not as_json:
        for line in summary.lines():
            console.print(f"[dim]{escape(line)}[/dim]")
    return hist, summary


def recommend(
    history: HistoryFile,
    run: Model = None,
    state_dir: StateDir = None,
    top_k: Annotated[int, typer.Option(help="number of recommendations")] = 10,
    data_format: DataFormat = "",
    user: User = "",
    int8: Annotated[bool, typer.Option("--int8", help="int8 dynamic quantization of the backbone (CPU): about "
                                       "1.5x faster per user, rankings change slightly")] = False,
    fmt: OutputFormat = "text",
) -> None:
    """Recommend items for a history with a trained model (a run, an export, or a device's last adapter), with
    reasons."""
    as_json = check_format(fmt)
    rec = _load(run, state_dir, as_json)
    if int8:
        from fedrec.shared.model.quantize import quantize_int8

        q = quantize_int8(rec.model)
        if not as_json:
            console.print(f"[dim]int8: {q.layers} Linear layers quantized ({q.engine} engine)[/dim]")
    hist, summary = _history(rec, history, data_format, user, as_json)
    try:
        recs = rec.recommend(hist, top_k)
    except ValueError as e:
        raise fail(str(e), as_json=as_json) from None
    dom = rec.domain
    if as_json:
        print_json({"schema": RECOMMEND_NAME, "schema_version": 1, "user": hist.user_id, "history_items": len(hist),
                    "domain": rec.cfg.data.domain, "load": summary.lines(),
                    "recommendations": [{"rank": i, "item": r.item, "item_id": r.item_id, "score": r.score,
                                         "tags": r.tags, "reasons": r.reasons}
                                        for i, r in enumerate(recs, 1)]})
        return
    table = Table(title=escape(f"Top {top_k} for {hist.user_id} ({len(hist)} {dom.items} in history)"))
    for col in ("#", dom.item, "tags", "score", dom.because):
        table.add_column(col)
    for i, r in enumerate(recs, 1):
        table.add_row(str(i), escape(r.item), escape(", ".join(r.tags)), f"{r.score:.2f}", escape(", ".join(r.reasons)))
    console.print(table)


def read_candidates(path: Path) -> list[str]:
    """One item name or id per line; blank lines and lines starting with '#' are skipped."""
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot read the candidates: {e}") from None
    items = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not items:
        raise ValueError(f"{path}: no candidates (one item name or id per line)")
    return items


def score(
    history: HistoryFile,
    candidates: Annotated[Path, typer.Option(help="candidate items, one name or id per line")],
    run: Model = None,
    state_dir: StateDir = None,
    data_format: DataFormat = "",
    user: User = "",
    fmt: OutputFormat = "text",
) -> None:
    """Score candidate items for a history (higher is better), e.g. the 20 candidates of a ranking benchmark."""
    from fedrec.shared.api import UnknownItemsError

    as_json = check_format(fmt)
    rec = _load(run, state_dir, as_json)
    hist, summary = _history(rec, history, data_format, user, as_json)
    try:
        names = read_candidates(candidates)
        values = rec.score(hist, names)
    except (UnknownItemsError, ValueError) as e:
        raise fail(str(e), as_json=as_json) from None
    order = sorted(range(len(values)), key=lambda k: -values[k])
    rank = {k: r for r, k in enumerate(order, 1)}
    held = set(hist.items.tolist())
    rows = []
    for k, (name, value) in enumerate(zip(names, values, strict=True)):
        i = rec.index(name)
        rows.append({"rank": rank[k], "item": rec.catalog.names[i], "item_id": rec.catalog.item_ids[i],
                     "score": value, "in_history": i in held})
    if as_json:
        print_json({"schema": SCORE_NAME, "schema_version": 1, "user": hist.user_id, "history_items": len(hist),
                    "load": summary.lines(), "candidates": rows})
        return
    table = Table(title=escape(f"{len(rows)} candidates for {hist.user_id} ({len(hist)} {rec.domain.items} in "
                               "history)"))
    for col in ("rank", rec.domain.item, "id", "score", "in history"):
        table.add_column(col)
    for r in rows:
        table.add_row(str(r["rank"]), escape(r["item"]), escape(r["item_id"]), f"{r['score']:.3f}",
                      "yes" if r["in_history"] else "")
    console.print(table)


def export(
    run: Annotated[Path, typer.Argument(help="a run directory (or a device's state directory)")],
    out: Annotated[Path, typer.Argument(help="the folder to write: a PEFT adapter directory plus fedrec's files")],
) -> None:
    """Write a standard PEFT adapter directory (PeftModel.from_pretrained loads it), the other tensors, the
    catalog and a model card (README.md) with the run's quality and its signed privacy statement."""
    from fedrec.shared.model.export import export_trained
    from fedrec.shared.model.recommend import load_trained
    from fedrec.shared.model.recommender import trainable_state
    from fedrec.shared.run_dir import ADAPTER, read_adapter

    def trainable_state_of(model: Any) -> dict[str, Any]:  # a run of released statistics only: the untrained start
        return {k: v.numpy() for k, v in trainable_state(model).items()}

    try:
        cfg, catalog, model = load_trained(run)
        state = read_adapter(run / ADAPTER) if (run / ADAPTER).is_file() else trainable_state_of(model)
        path = export_trained(out, model=model, cfg=cfg, catalog=catalog, state=state, run=run,
                              released=model.released)
    except (FileNotFoundError, ValueError) as e:
        raise fail(str(e)) from None
    console.print(f"wrote {escape(str(path))} (load: PeftModel.from_pretrained(AutoModel.from_pretrained(BASE), "
                  f"{escape(repr(str(path)))}); see its README.md)", highlight=False)


def install(app: typer.Typer) -> None:
    """Register the commands on the `fedrec` app."""
    app.command()(recommend)
    app.command()(score)
    app.command()(export)
