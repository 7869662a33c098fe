"""Privacy-utility on Last.fm-2K: NDCG@10 / HR@10 at record-level and user-level target epsilons.

Each setting is one full federated run (the real ServerApp loop and ClientApp, `--engine inprocess` by default so
one process can own a GPU; `--engine ray` is Flower's simulation engine), evaluated at the end on every user's
held-out item with full ranking over the catalog. Settings:

    none        non-private
    record:E    on-device DP-SGD, z calibrated so a device can train in `--record-rounds` rounds within E
                (the device budget is E: a device sampled more often declines); item-bias step 1 (see below)
    user:E      DP-FedAvg, Poisson client sampling (q = C/N), z calibrated so `--rounds` releases reach E
    both:E      both, each at E

Item-bias step under record-level DP: the bias gradient of one step carries noise of std z*C/(q*K) per item, so
the default SGD-like step of 50 turns into a random walk of the biases; 1.0 keeps the noise step small.

    python -m fedrec.simulations.bench_privacy_utility run --setting none --setting record:8 ... \\
        --data ../shared/data/hetrec2011-lastfm-2k --out results.jsonl
    python -m fedrec.simulations.bench_privacy_utility table results.jsonl \\
        --out simulations/results/privacy_utility.md --plot simulations/results/privacy_utility.png
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Annotated

import typer

from fedrec.shared.config import RunConfig
from fedrec.shared.run_dir import read_config

app = typer.Typer(add_completion=False, no_args_is_help=True)


def setting_config(setting: str, base: RunConfig, *, record_rounds: int, record_bias_lr: float) -> RunConfig:
    """The RunConfig of one setting ("none", "record:E", "user:E", "both:E")."""
    kind, _, value = setting.partition(":")
    if kind == "none":
        return base
    try:
        eps = float(value)
    except ValueError:
        raise typer.BadParameter(f"setting {setting!r}: expected KIND:EPSILON, e.g. record:8") from None
    cfg = base
    if kind in ("record", "both"):
        cfg = cfg.updated({"record_dp.enabled": True, "record_dp.target_epsilon": eps,
                           "record_dp.target_rounds": record_rounds, "train.bias_learning_rate": record_bias_lr})
    if kind in ("user", "both"):
        cfg = cfg.updated({"user_dp.enabled": True, "run.client_sampling": "poisson", "user_dp.target_epsilon": eps})
    if kind not in ("record", "user", "both"):
        raise typer.BadParameter(f"setting {setting!r}: kind must be none, record, user or both")
    return cfg


def summarise(setting: str, run: Path, seconds: float) -> dict:
    """One results row from a finished run directory (its rounds, config and privacy report)."""
    rounds = json.loads((run / "rounds.json").read_text())
    final = [r for r in rounds if "eval_ndcg@10" in r][-1]
    cfg = read_config(run)
    row = {"setting": setting, "run": str(run), "seconds": round(seconds, 1), "rounds": len(rounds),
           "ndcg@10": final["eval_ndcg@10"], "hr@10": final["eval_hr@10"],
           "updates": sum(r.get("updates", 0) for r in rounds), "declined": sum(r.get("declined", 0) for r in rounds),
           "record_z": cfg.record_dp.noise_multiplier if cfg.record_dp.enabled else None,
           "user_z": cfg.user_dp.noise_multiplier if cfg.user_dp.enabled else None}
    report_path = run / "privacy-report.json"
    if report_path.exists():
        report = json.loads(report_path.read_text())
        if report.get("user_level"):
            acc = report["user_level"]["accounting"]
            row["user_epsilon"], row["user_delta"] = acc["epsilon"], acc["delta"]
        across = report.get("record_level_across_devices")
        if across:
            row["record_epsilon"] = {"devices": across["devices"], "delta": across["delta"],
                                     "max": across["epsilon"]["max"], "median": across["epsilon"]["median"]}
    return row


@app.command()
def run(
    setting: Annotated[list[str], typer.Option(help="none | record:E | user:E | both:E (repeatable)")],
    data: Annotated[str, typer.Option(help="Last.fm-2K directory")] = "../shared/data/hetrec2011-lastfm-2k",
    model: Annotated[str, typer.Option(help="'minilm' or a local model directory")] = "minilm",
    rounds: Annotated[int, typer.Option(help="federated rounds")] = 40,
    clients: Annotated[int, typer.Option(help="clients per round (expected, under Poisson sampling)")] = 50,
    record_rounds: Annotated[int, typer.Option(help="rounds a device can afford within its target")] = 3,
    record_bias_lr: Annotated[float, typer.Option(help="item-bias step under record-level DP")] = 1.0,
    max_users: Annotated[int, typer.Option(help="first N users only (0 = all), for a quick check")] = 0,
    engine: Annotated[str, typer.Option(help="'inprocess' or 'ray'")] = "inprocess",
    run_dir: Annotated[str, typer.Option(help="parent of the run directories")] = "runs/privacy-utility",
    out: Annotated[Path, typer.Option(help="JSON-lines file the rows are appended to")] = Path("results.jsonl"),
) -> None:
    """Run each setting as a full federated run and append one JSON row per setting to OUT."""
    from fedrec.simulations.simulate import simulate

    logging.getLogger("absl").setLevel(logging.ERROR)  # dp-accounting's RDP warns on every fractional order
    base = RunConfig.from_mapping({"data.source": data, "model.name": model, "data.max_users": max_users,
                                   "run.rounds": rounds, "run.clients_per_round": clients, "eval.every": rounds,
                                   "run.dir": run_dir})
    for s in setting:
        cfg = setting_config(s, base, record_rounds=record_rounds, record_bias_lr=record_bias_lr)
        cfg = cfg.updated({"run.name": f"{s.replace(':', '-')}-{os.getpid()}-{int(time.time())}"})
        t0 = time.perf_counter()
        path = simulate(cfg, engine=engine)
        row = summarise(s, path, time.perf_counter() - t0)
        with open(out, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        typer.echo(json.dumps(row))


ORDER = {"none": 0, "record": 1, "user": 2, "both": 3}


def _fmt(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


@app.command()
def table(
    results: Path,
    out: Annotated[Path, typer.Option(help="Markdown table")] = Path("simulations/results/privacy_utility.md"),
    plot: Annotated[Path | None, typer.Option(help="PNG plot of NDCG@10 against epsilon")] = None,
    header: Annotated[str, typer.Option(help="Markdown written above the table")] = "",
    reference: Annotated[list[str] | None, typer.Option(help="NAME=NDCG line on the plot, e.g. popularity=0.04")]
    = None,
) -> None:
    """Turn the JSON rows into the Markdown results table (and a plot)."""
    rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    rows.sort(key=lambda r: (ORDER[r["setting"].split(":")[0]], -float(r["setting"].partition(":")[2] or 0)))
    lines = [header.rstrip(), ""] if header else []
    lines += ["| setting | record-level ε (target; max / median over devices) | record z | user-level ε (δ) | "
              "user z | declined | NDCG@10 | HR@10 | wall s |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        rec = r.get("record_epsilon")
        rec_txt = (f"{r['setting'].split(':')[1]}; {_fmt(rec['max'])} / {_fmt(rec['median'])}"
                   if rec else "-")
        user_txt = f"{_fmt(r['user_epsilon'])} ({r['user_delta']:.2g})" if "user_epsilon" in r else "-"
        lines.append(f"| {r['setting']} | {rec_txt} | {_fmt(r['record_z'])} | {user_txt} | {_fmt(r['user_z'])} | "
                     f"{r['declined']} | {r['ndcg@10']:.4f} | {r['hr@10']:.4f} | {r['seconds']:.0f} |")
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    typer.echo(out.read_text())
    if plot is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        base = [r for r in rows if r["setting"] == "none"]
        for kind, marker in (("record", "o"), ("user", "s"), ("both", "^")):
            pts = sorted((float(r["setting"].split(":")[1]), r["ndcg@10"]) for r in rows
                         if r["setting"].startswith(kind + ":"))
            if pts:
                ax.plot(*zip(*pts, strict=True), marker=marker, label=f"{kind}-level" if kind != "both" else "both")
        if base:
            ax.axhline(base[0]["ndcg@10"], color="grey", linestyle="--", label="non-private")
        for ref, style in zip(reference or [], (":", "-.", (0, (1, 3))), strict=False):
            name, _, value = ref.partition("=")
            ax.axhline(float(value), color="black", linestyle=style, linewidth=0.8, label=name)
        ax.set_xlabel("target epsilon (record-level: per device; user-level: per user)")
        ax.set_ylabel("NDCG@10 (full ranking)")
        ax.set_title("Last.fm-2K: privacy vs utility")
        ax.legend()
        fig.tight_layout()
        fig.savefig(plot, dpi=120)


if __name__ == "__main__":
    app()
