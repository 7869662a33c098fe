"""`fedrec`: the command line. It parses arguments and calls into the package; no logic lives here."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fedrec.cli.audit import app as audit_app
from fedrec.cli.deploy import install as install_deploy_commands

for _k, _v in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
               "FLWR_TELEMETRY_ENABLED": "0", "RAY_USAGE_STATS_ENABLED": "0"}.items():
    os.environ.setdefault(_k, _v)

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Federated, privacy-preserving LoRA recommender over listening histories.")
app.add_typer(audit_app, name="audit")
console = Console(emoji=False)  # ":cd:" in a hex fingerprint must not become an emoji


def _overrides(pairs: list[str]) -> dict[str, str]:
    out = {}
    for p in pairs:
        if "=" not in p:
            raise typer.BadParameter(f"--set expects KEY=VALUE, found {p!r}")
        k, v = p.split("=", 1)
        out[k.strip()] = v.strip()
    return out


@app.command()
def simulate(
    data: Annotated[str, typer.Option(help="synthetic[:users=N,items=M,seed=S], a HetRec dir, or a file")] = "",
    model: Annotated[str, typer.Option(help="'minilm' (bundled) or a local HF model directory")] = "",
    rounds: Annotated[int, typer.Option(help="federated rounds")] = 0,
    clients_per_round: Annotated[int, typer.Option(help="clients sampled per round")] = 0,
    max_users: Annotated[int, typer.Option(help="use the first N users only")] = -1,
    run_dir: Annotated[str, typer.Option(help="parent folder of run directories")] = "",
    run_name: Annotated[str, typer.Option(help="run directory name (default: a timestamp)")] = "",
    set_: Annotated[list[str], typer.Option("--set", "-s", help="any other setting, KEY=VALUE (repeatable); "
                                            "see `fedrec settings`")] = [],  # noqa: B006
    num_cpus: Annotated[int, typer.Option(help="CPUs Ray may use (1 per virtual client)")] = 0,
    engine: Annotated[str, typer.Option(help="'ray' (Flower's simulation engine) or 'inprocess' (the same apps "
                                        "in this process: one GPU, sweeps)")] = "ray",
    ray_address: Annotated[str, typer.Option(help="attach to this running Ray cluster (the HOST:PORT `ray start "
                                             "--head` printed; run on one of its nodes): its CPUs decide how many "
                                             "clients train at once; see docs/scale-out.md")] = "",
    secure_aggregation: Annotated[bool | None, typer.Option(
        "--secure-aggregation/--no-secure-aggregation",
        help="SecAgg+: the server sees only masked uploads and their sum (default: the setting's default)")] = None,
    audit_canaries: Annotated[int, typer.Option(help="empirical record-level audit: M canary examples on users' "
                                                "devices, each included with probability 1/2")] = -1,
    audit_canary_clients: Annotated[int, typer.Option(help="empirical user-level audit: K canary clients that "
                                                      "send random directions")] = -1,
    resume: Annotated[Path | None, typer.Option(help="continue this interrupted run directory from its checkpoint "
                                                "(its own settings; other settings must be left out)")] = None,
) -> None:
    """Simulate a whole federation on this machine: one virtual client per user (Flower + Ray)."""
    from fedrec.shared.config import ConfigError, RunConfig

    if engine not in ("ray", "inprocess"):
        console.print(f"[red]error:[/red] --engine must be 'ray' or 'inprocess', found {engine!r}")
        raise typer.Exit(2)
    if ray_address:
        from fedrec.simulations.ray_cluster import parse_address

        problem = ("--ray-address needs --engine ray" if engine != "ray" else
                   "--num-cpus applies to a local Ray; an attached cluster's own CPUs decide" if num_cpus else "")
        try:
            parse_address(ray_address)
        except ValueError as e:
            problem = str(e)
        if problem:
            console.print(f"[red]error:[/red] {escape(str(problem))}")
            raise typer.Exit(2)

    values: dict[str, Any] = _overrides(set_)
    for key, value, unset in (("data.source", data, ""), ("model.name", model, ""), ("run.rounds", rounds, 0),
                              ("run.clients_per_round", clients_per_round, 0), ("data.max_users", max_users, -1),
                              ("run.dir", run_dir, ""), ("run.name", run_name, ""),
                              ("secagg.enabled", secure_aggregation, None),
                              ("audit.canaries", audit_canaries, -1),
                              ("audit.canary_clients", audit_canary_clients, -1)):
        if value != unset:
            values[key] = value
    try:
        if resume is not None:  # the run's own settings; any given here must agree (server.checkpoint)
            from fedrec.server.checkpoint import CheckpointError, resumable_config

            try:
                cfg = resumable_config(resume, overrides=values)
            except CheckpointError as e:
                raise ConfigError(str(e)) from None
        else:
            cfg = RunConfig.from_mapping(values, source="command line")
    except ConfigError as e:
        console.print(f"[red]error:[/red] {escape(str(e))}")
        raise typer.Exit(2) from None
    from fedrec.simulations.simulate import simulate as run_sim

    started = time.perf_counter()
    state: dict[str, Any] = {}

    def on_event(kind: str, payload: dict[str, Any]) -> None:
        if kind == "start":
            state.update(payload)
            console.print(f"[bold]fedrec[/bold] {payload['clients']} clients, catalog {payload['catalog']} items, "
                          f"adapter {payload['adapter_params']:,} params ({payload['adapter_bytes'] / 1e6:.2f} MB)"
                          f" -> {payload['run_dir']}")
            if payload.get("resumed_after_round") is not None:
                console.print(f"resumed from the checkpoint after round {payload['resumed_after_round']}")
        elif kind == "cluster":  # fedrec.simulations.ray_cluster: an attached Ray cluster passed its checks
            console.print(f"Ray cluster {payload['address']}: {payload['nodes']} node(s), {payload['cpus']:g} CPUs, "
                          f"{payload['parallel_clients']} clients at a time")
        elif kind == "round":
            ev = ""
            if "eval_ndcg@10" in payload:
                ev = (f"  NDCG@10 {payload['eval_ndcg@10']:.4f}  HR@10 {payload['eval_hr@10']:.4f}"
                      f"  (users {int(payload['eval_users'])})")
            console.print(f"round {payload['round']:>3}/{cfg.run.rounds}  {payload['status']:<6} "
                          f"updates {payload['updates']:>3}/{payload['sampled']:<3} loss {payload['train_loss']:.3f}"
                          f"  {payload['wall_seconds']:6.1f} s{ev}")

    try:
        run = run_sim(cfg, on_event=on_event, num_cpus=num_cpus or None, engine=engine, resume=resume,
                      ray_address=ray_address or None)
    except Exception as e:  # noqa: BLE001 - report any failure clearly and exit non-zero
        console.print(f"[red]simulation failed:[/red] {type(e).__name__}: {escape(str(e))}")
        raise typer.Exit(1) from None
    example = _write_example_history(run)
    _print_summary(run, time.perf_counter() - started, example)


def _write_example_history(run: Path) -> Path:
    """A demo listener for `fedrec recommend`, made from the public catalog only (no user's data).

    It lists up to 8 artists that share the most common top tag of the catalog.
    """
    import csv
    from collections import Counter

    from fedrec.shared.run_dir import read_catalog

    catalog = read_catalog(run)
    top = [t[0] for t in catalog.tags if t]
    tag = Counter(top).most_common(1)[0][0] if top else None
    items = [i for i, t in enumerate(catalog.tags) if t and t[0] == tag][:8] or list(range(min(8, len(catalog))))
    path = run / "example-history.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["user", "item"])
        w.writerows(["demo-listener", catalog.item_ids[i]] for i in items)
    return path


def _print_summary(run: Path, seconds: float, example: Path) -> None:
    import json

    rounds = json.loads((run / "rounds.json").read_text())
    last_eval = next((r for r in reversed(rounds) if "eval_ndcg@10" in r), {})
    trained = [r for r in rounds if "bytes_down_per_client" in r]  # a stop row (budget) trained nothing
    ok = sum(r["status"] == "ok" for r in trained)
    stopped = [r for r in rounds if str(r["status"]).startswith("stopped")]
    last = trained[-1] if trained else {"bytes_down_per_client": 0, "bytes_up_per_client": 0}
    lines = [
        f"run directory   {run}",
        f"rounds          {ok}/{len(trained)} completed in {seconds:.0f} s"
        + (f"; {stopped[0]['status']} before round {stopped[0]['round']} (a normal end)" if stopped else ""),
        f"NDCG@10 / HR@10 {last_eval.get('eval_ndcg@10', float('nan')):.4f} / "
        f"{last_eval.get('eval_hr@10', float('nan')):.4f} (full ranking, {int(last_eval.get('eval_users', 0))} users)",
        f"sampled (99 neg) {last_eval.get('eval_ndcg@10_sampled', float('nan')):.4f} NDCG@10, "
        f"coverage@10 {last_eval.get('eval_coverage@10', float('nan')):.3f}",
        f"bytes/client    {last['bytes_down_per_client'] / 1e6:.2f} MB down, "
        f"{last['bytes_up_per_client'] / 1e6:.2f} MB up per round",
        f"adapter         {run / 'adapter.safetensors'}",
        f"try             fedrec recommend --run {run} --history {example}",
    ]
    if (run / "privacy-report.json").is_file():
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
    text = "\n".join(lines)
    (run / "summary.txt").write_text(text + "\n")
    console.print(text, markup=False)


@app.command()
def recommend(
    history: Annotated[Path, typer.Option(help="one user's history file (any supported format)")],
    run: Annotated[Path | None, typer.Option(help="a run directory written by `fedrec simulate`")] = None,
    state_dir: Annotated[Path | None, typer.Option(help="a deployed device's state directory (offline: its last "
                                                   "global adapter, catalog and run settings)")] = None,
    top_k: Annotated[int, typer.Option(help="number of recommendations")] = 10,
    fmt: Annotated[str, typer.Option("--format", help="force the history format (hetrec, lastfm1k, "
                                     "listenbrainz, csv)")] = "",
    user: Annotated[str, typer.Option(help="the user to read, if the file holds several")] = "",
    int8: Annotated[bool, typer.Option("--int8", help="int8 dynamic quantization of the backbone (CPU): about "
                                       "1.5x faster per user, rankings change slightly")] = False,
) -> None:
    """Recommend artists for a listening history with the run's (or a device's last) global adapter, with reasons."""
    from fedrec.shared.data.load import load_history
    from fedrec.shared.data.types import DataFormatError
    from fedrec.shared.model.recommend import load_trained
    from fedrec.shared.model.recommend import recommend as rank

    if (run is None) == (state_dir is None):
        console.print("[red]error:[/red] give exactly one of --run RUN (a run directory) and --state-dir DIR "
                      "(a deployed device's state directory)")
        raise typer.Exit(2)
    try:
        cfg, catalog, model = load_trained(run or state_dir)  # a device's state dir reads like a run dir
        if int8:
            from fedrec.shared.model.quantize import quantize_int8

            q = quantize_int8(model)
            console.print(f"[dim]int8: {q.layers} Linear layers quantized ({q.engine} engine)[/dim]")
        hist, summary = load_history(history, catalog, fmt or None, user=user or None)
        recs = rank(model, cfg, catalog, hist, top_k)
    except (DataFormatError, FileNotFoundError, ValueError) as e:
        console.print(f"[red]error:[/red] {escape(str(e))}")
        raise typer.Exit(2) from None
    for line in summary.lines():
        console.print(f"[dim]{escape(line)}[/dim]")
    table = Table(title=escape(f"Top {top_k} for {hist.user_id} ({len(hist)} artists in history)"))
    for col in ("#", "artist", "tags", "score", "because you played"):
        table.add_column(col)
    for i, r in enumerate(recs, 1):
        table.add_row(str(i), escape(r.name), escape(", ".join(r.tags)), f"{r.score:.2f}", escape(", ".join(r.because)))
    console.print(table)


@app.command()
def settings() -> None:
    """List every setting with its default (use with `fedrec simulate --set KEY=VALUE`)."""
    from fedrec.shared.config import RunConfig, help_text

    table = Table()
    table.add_column("setting", no_wrap=True)  # a key must stay copyable as one word
    table.add_column("default")
    table.add_column("meaning")
    helps = help_text()
    for k, v in RunConfig().to_flat().items():
        table.add_row(k, escape(repr(v)), escape(helps.get(k, "")))
    console.print(table)


install_deploy_commands(app)  # keys, register, server, client (fedrec.cli.deploy)

if __name__ == "__main__":
    app()
