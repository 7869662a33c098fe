"""`fedrec simulate`: argument parsing, the live display of the rounds, and the closing summary.

The run itself is `fedrec.simulations.simulate.simulate`. What this module adds around it: a progress bar over the
rounds (clients answered in the current phase, the last round's time, epsilon so far) on a terminal, one line per
round (text), the popularity baseline on the same split as a reference point, and the summary: printed as text
or as the run's `summary.json` document (`--format json`, schema: `fedrec schema summary`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from fedrec.cli.common import (
    DataFormat,
    OutputFormat,
    Quiet,
    check_format,
    console,
    err_console,
    fail,
    overrides,
    print_json,
)
from fedrec.shared.config import RunConfig

_DEFAULTS = RunConfig()


def simulate(
    data: Annotated[str, typer.Option(help="synthetic[:users=N,items=M,seed=S], a HetRec dir, or a file",
                                      show_default=f"{_DEFAULTS.data.source}: 200 users here")] = "",
    data_format: DataFormat = "",
    holdout: Annotated[str, typer.Option(help="'test+validation' (one test and one validation item per user) or "
                                              "'none' (train on every item; nothing is evaluated)",
                                         show_default=_DEFAULTS.data.holdout)] = "",
    domain: Annotated[str, typer.Option(help="what the items are: music, movies, books, products, generic (prompt "
                                             "wording, CLI nouns)", show_default=_DEFAULTS.data.domain)] = "",
    model: Annotated[str, typer.Option(help="'minilm' (bundled) or a local HF model directory",
                                       show_default=_DEFAULTS.model.name)] = "",
    rounds: Annotated[int, typer.Option(help="federated rounds", show_default=str(_DEFAULTS.run.rounds))] = 0,
    clients_per_round: Annotated[int, typer.Option(help="clients sampled per round",
                                                   show_default=str(_DEFAULTS.run.clients_per_round))] = 0,
    max_users: Annotated[int, typer.Option(help="use the first N users only", show_default="all")] = -1,
    run_dir: Annotated[str, typer.Option(help="parent folder of run directories",
                                         show_default=_DEFAULTS.run.dir)] = "",
    run_name: Annotated[str, typer.Option(help="run directory name", show_default="a timestamp")] = "",
    set_: Annotated[list[str], typer.Option("--set", "-s", help="any other setting, KEY=VALUE (repeatable); "
                                            "see `fedrec settings`")] = [],  # noqa: B006
    num_cpus: Annotated[int, typer.Option(help="CPUs Ray may use (1 per virtual client)",
                                          show_default="all")] = 0,
    engine: Annotated[str, typer.Option(help="'ray' (Flower's simulation engine) or 'inprocess' (the same apps "
                                        "in this process: one GPU, sweeps)")] = "ray",
    ray_address: Annotated[str, typer.Option(help="attach to this running Ray cluster (the HOST:PORT `ray start "
                                             "--head` printed; run on one of its nodes): its CPUs decide how many "
                                             "clients train at once; see docs/scale-out.md")] = "",
    secure_aggregation: Annotated[bool | None, typer.Option(
        "--secure-aggregation/--no-secure-aggregation",
        help="SecAgg+: the server sees only masked uploads and their sum (secagg.mode; 'auto': on with user-level DP)",
        show_default="auto")] = None,
    audit_canaries: Annotated[int, typer.Option(help="empirical record-level audit: M canary examples on users' "
                                                "devices, each included with probability 1/2",
                                                show_default=str(_DEFAULTS.audit.canaries))] = -1,
    audit_canary_clients: Annotated[int, typer.Option(help="empirical user-level audit: K canary clients that "
                                                      "send random directions",
                                                      show_default=str(_DEFAULTS.audit.canary_clients))] = -1,
    resume: Annotated[Path | None, typer.Option(help="continue this interrupted run directory from its checkpoint "
                                                "(its own settings; other settings must be left out)")] = None,
    preset: Annotated[str, typer.Option(help="a named preset (hybrid-eps8, hybrid-nonprivate, quick, lastfm2k, ...) "
                                        "or a .toml file, applied before the other options")] = "",
    fmt: OutputFormat = "text",
    quiet: Quiet = False,
) -> None:
    """Simulate a whole federation on this machine: one virtual client per user (Flower + Ray)."""
    from fedrec.shared.config import ConfigError
    from fedrec.shared.progress import RunInterrupted, set_quiet

    as_json = check_format(fmt)
    if as_json or quiet:
        set_quiet()
    if engine not in ("ray", "inprocess"):
        raise fail(f"--engine must be 'ray' or 'inprocess', found {engine!r}", as_json=as_json)
    if ray_address:
        from fedrec.simulations.ray_cluster import parse_address

        problem = ("--ray-address needs --engine ray" if engine != "ray" else
                   "--num-cpus applies to a local Ray; an attached cluster's own CPUs decide" if num_cpus else "")
        try:
            parse_address(ray_address)
        except ValueError as e:
            problem = str(e)
        if problem:
            raise fail(problem, as_json=as_json)

    values: dict[str, Any] = overrides(set_)
    for key, value, unset in (("data.source", data, ""), ("data.format", data_format, ""),
                              ("data.holdout", holdout, ""), ("data.domain", domain, ""), ("model.name", model, ""),
                              ("run.rounds", rounds, 0), ("run.clients_per_round", clients_per_round, 0),
                              ("data.max_users", max_users, -1), ("run.dir", run_dir, ""), ("run.name", run_name, ""),
                              ("secagg.enabled", secure_aggregation, None), ("audit.canaries", audit_canaries, -1),
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
        elif preset:
            from fedrec.shared.config import load_preset, preset_path

            cfg = RunConfig.from_mapping(load_preset(preset), source=str(preset_path(preset)))
            cfg = cfg.updated(values, source="command line") if values else cfg
        else:
            cfg = RunConfig.from_mapping(values, source="command line")
    except ConfigError as e:
        raise fail(str(e), as_json=as_json) from None
    if cfg.secagg_warning:  # stderr, so --json output stays one document
        err_console.print(f"[yellow]{escape(cfg.secagg_warning)}[/yellow]", highlight=False)
    from fedrec.simulations.simulate import simulate as run_sim

    started = time.perf_counter()
    display = RoundDisplay(cfg, lines=not (as_json or quiet))
    try:
        with display:
            run = run_sim(cfg, on_event=display, num_cpus=num_cpus or None, engine=engine, resume=resume,
                          ray_address=ray_address or None)
    except (RunInterrupted, KeyboardInterrupt):
        where = display.run_dir or "the run directory"
        console.print(f"[yellow]interrupted[/yellow] after round {display.done}; continue with: fedrec simulate "
                      f"--resume {escape(str(where))}", highlight=False)
        raise typer.Exit(130) from None
    except Exception as e:  # noqa: BLE001 - report any failure clearly and exit non-zero
        summary = _failed_summary(display.run_dir)
        if as_json and summary is not None:
            print_json(summary)
        (err_console if as_json else console).print(f"[red]simulation failed:[/red] {type(e).__name__}: "
                                                    f"{escape(str(e))}", highlight=False)
        raise typer.Exit(1) from None
    finish(run, time.perf_counter() - started, as_json=as_json)


def _failed_summary(run_dir: str | None) -> dict[str, Any] | None:
    from fedrec.shared.run_summary import read_summary

    try:
        return read_summary(Path(run_dir)) if run_dir else None
    except (FileNotFoundError, ValueError):
        return None


class RoundDisplay:
    """The `on_event` of a simulation: a line per round, and a progress bar over rounds on a terminal."""

    def __init__(self, cfg: RunConfig, *, lines: bool) -> None:
        self.cfg, self.lines = cfg, lines
        self.run_dir: str | None = None
        self.done = 0
        self._bar: Any = None
        self._ctx: Any = None
        self._last = ""

    def __enter__(self) -> RoundDisplay:
        from fedrec.shared.progress import task

        self._ctx = task(f"round 1/{self.cfg.run.rounds}", total=self.cfg.run.rounds)
        self._bar = self._ctx.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._ctx.__exit__(*exc)

    def _describe(self, text: str) -> None:
        try:
            self._bar.update(description=text)
        except Exception:  # noqa: BLE001 - a display must never stop a run (a stop request is checked elsewhere)
            pass

    def __call__(self, kind: str, payload: dict[str, Any]) -> None:
        if kind == "start":
            self.run_dir = payload["run_dir"]
            self.done = int(payload.get("resumed_after_round") or 0)
            try:
                self._bar.update(completed=self.done)
            except Exception:  # noqa: BLE001 - see _describe
                pass
            if self.lines:
                console.print(f"[bold]fedrec[/bold] {payload['clients']} clients, catalog {payload['catalog']} "
                              f"items, adapter {payload['adapter_params']:,} params "
                              f"({payload['adapter_bytes'] / 1e6:.2f} MB) -> {escape(payload['run_dir'])}")
                if payload.get("resumed_after_round") is not None:
                    console.print(f"resumed from the checkpoint after round {payload['resumed_after_round']}")
        elif kind == "cluster" and self.lines:  # fedrec.simulations.ray_cluster: an attached cluster passed checks
            console.print(f"Ray cluster {payload['address']}: {payload['nodes']} node(s), {payload['cpus']:g} CPUs, "
                          f"{payload['parallel_clients']} clients at a time")
        elif kind == "clients":
            phase = {"train": "training", "evaluate": "evaluating"}.get(str(payload["phase"]).split(".")[0],
                                                                        str(payload["phase"]))
            self._describe(f"round {self.done + 1}/{self.cfg.run.rounds} · {phase} {payload['done']}/"
                           f"{payload['total']} clients{self._last}")
        elif kind == "release" and self.lines:  # round 0: one released statistic, or the evaluation after them
            self._print_release(payload)
        elif kind == "round":
            self.done = int(payload["round"])
            eps = "".join(f" · {label} {payload[key]:.3g}" for key, label in
                          (("epsilon_user_rdp", "user ε ≤"), ("epsilon_record_max", "record ε max")) if key in payload)
            self._last = f" · last round {payload['wall_seconds']:.1f} s{eps}"
            self._describe(f"round {min(self.done + 1, self.cfg.run.rounds)}/{self.cfg.run.rounds}{self._last}")
            try:
                self._bar.advance(1)
            except Exception:  # noqa: BLE001 - see _describe
                pass
            if self.lines:
                self._print_round(payload)

    def _print_release(self, p: dict[str, Any]) -> None:
        if "release" in p:
            console.print(f"release {p['release']:<12} {p['status']:<6} contributions {p.get('updates', 0):>4}/"
                          f"{p.get('sampled', 0):<4} {p.get('wall_seconds', 0.0):6.1f} s", highlight=False)
        elif "eval_ndcg@10" in p:
            console.print(f"round   0 (released statistics + text tower)  NDCG@10 {p['eval_ndcg@10']:.4f}  HR@10 "
                          f"{p['eval_hr@10']:.4f}  (users {int(p['eval_users'])})", highlight=False)

    def _print_round(self, p: dict[str, Any]) -> None:
        ev = ""
        if "eval_ndcg@10" in p:
            ev = f"  NDCG@10 {p['eval_ndcg@10']:.4f}  HR@10 {p['eval_hr@10']:.4f}  (users {int(p['eval_users'])})"
        console.print(f"round {p['round']:>3}/{self.cfg.run.rounds}  {p['status']:<6} updates {p['updates']:>3}/"
                      f"{p['sampled']:<3} loss {p['train_loss']:.3f}  {p['wall_seconds']:6.1f} s{ev}",
                      highlight=False)


def popularity_reference(run: Path) -> dict[str, float] | None:
    """Popularity on the run's own split (centralized, computed here from the simulated data: a reference point,
    outside the federation and any privacy guarantee); None when nobody is evaluated."""
    from fedrec.shared.data.federation import load_federation
    from fedrec.shared.run_dir import read_config
    from fedrec.simulations.baselines import evaluate_scorer, popularity_scorer

    cfg = read_config(run)
    if cfg.run.deployment_nodes:
        return None
    fed = load_federation(cfg)
    if not any(s.evaluated for s in fed.splits):
        return None
    n = len(fed.catalog)
    return evaluate_scorer(fed.splits, popularity_scorer(fed.splits, n), n, seed=cfg.run.seed)


def finish(run: Path, seconds: float, *, as_json: bool) -> None:
    """Add what the command measured to summary.json, then print it (JSON) or the text summary."""
    from fedrec.cli.summary import example_history, summary_lines
    from fedrec.shared.run_summary import read_summary, write_summary

    doc = read_summary(run)
    doc["seconds"] = round(seconds, 1)
    popularity = popularity_reference(run)
    doc["baselines"] = {"popularity": popularity} if popularity else {}
    doc["example_history"] = str(example_history(run))
    write_summary(run, doc)
    text = "\n".join(summary_lines(run, doc))
    (run / "summary.txt").write_text(text + "\n")
    if as_json:
        print_json(doc)
    else:
        console.print(text, markup=False, highlight=False)
