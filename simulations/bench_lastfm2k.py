"""Benchmark (not a test): every baseline and the federated model on one data set, one split, one metric code.

    python -m fedrec.simulations.bench_lastfm2k [--data ../shared/data/hetrec2011-lastfm-2k] [--data-format F]
        [--rounds 40] [--clients-per-round 50] [--central-epochs 2] [--out simulations/results/lastfm2k.md]

HetRec Last.fm-2K by default; `--data` takes any data set fedrec reads (a CSV of ratings, a ListenBrainz export,
...; `--data-format` when the file's name does not say), and the table then puts popularity, ALS and BPR beside
fedrec on that data.

Writes a Markdown table (HR@10, NDCG@10 on full ranking excluding training items, the 99-sampled-negative
variants, coverage@10), the command, the machine and wall times; plus the federated run's per-round cost
figures. Protocol: `../shared/notes/recsys-protocol.md` (split seed 0, 1,877 evaluated users).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from fedrec.shared.config import RunConfig
from fedrec.shared.data.federation import load_federation
from fedrec.shared.metrics import RankingMetrics
from fedrec.shared.model.build import build_model, set_global_state
from fedrec.shared.model.recommender import trainable_state
from fedrec.shared.model.scoring import score_users
from fedrec.shared.progress import task
from fedrec.shared.train.local import train_central
from fedrec.simulations.baselines import als_scorer, bpr_scorer, evaluate_scorer, popularity_scorer

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "hetrec2011-lastfm-2k"


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, {platform.system()} {platform.machine()}, no GPU"


def evaluate_model(model, cfg: RunConfig, splits, num_items: int, seed: int = 0) -> dict[str, float]:
    """Score every evaluated user in-process with the same metric code the clients use."""
    evaluated = [s for s in splits if s.evaluated]
    total = RankingMetrics(num_items=num_items)
    rng = np.random.default_rng(seed)
    with task("evaluating users", total=len(evaluated)) as bar:
        for start in range(0, len(evaluated), 256):
            chunk = evaluated[start : start + 256]
            scores = score_users(model, chunk, load_federation(cfg).catalog, cfg)
            for s, row in zip(chunk, scores, strict=True):
                total.add_scores(row, s.test_item, s.train_items, rng=rng)
            bar.advance(len(chunk))
    return total.summary()


def add_run_arguments(ap: argparse.ArgumentParser) -> None:
    """--data, --data-format, --rounds, --clients-per-round: what the benchmarks that train a federation share."""
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--data-format", default="", help="the data's format when its name does not say")
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--clients-per-round", type=int, default=50)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(ap)
    ap.add_argument("--central-epochs", type=int, default=2)
    ap.add_argument("--set", "-s", action="append", default=[], help="extra RunConfig KEY=VALUE")
    ap.add_argument("--skip", default="", help="comma list of: baselines,zeroshot,central,federated")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "lastfm2k.md"))
    args = ap.parse_args(argv)
    if not Path(args.data).exists():
        hint = " (HetRec Last.fm-2K is not shipped with fedrec)" if args.data == str(DEFAULT_DATA) else ""
        print(f"--data {args.data}: not found{hint}", file=sys.stderr)
        return 2
    skip = set(filter(None, args.skip.split(",")))
    extra = dict(kv.split("=", 1) for kv in args.set)
    cfg = RunConfig.from_mapping({"data.source": args.data, "data.format": args.data_format, "run.rounds": args.rounds,
                                  "run.clients_per_round": args.clients_per_round, "eval.every": args.rounds,
                                  "run.name": f"bench-lastfm2k-{time.strftime('%Y%m%d-%H%M%S')}", **extra})
    try:
        fed = load_federation(cfg)
    except (OSError, ValueError) as e:  # DataFormatError names the file and line
        print(f"cannot read --data {args.data}: {e}", file=sys.stderr)
        return 2
    n_items = len(fed.catalog)
    rows: list[tuple[str, dict[str, float], str]] = []

    def timed(name: str, fn) -> None:
        t0 = time.perf_counter()
        result = fn()
        rows.append((name, result, f"{time.perf_counter() - t0:.0f} s"))
        print(f"{name}: ndcg@10 {result['ndcg@10']:.4f} hr@10 {result['hr@10']:.4f} ({rows[-1][2]})", flush=True)

    if "baselines" not in skip:
        timed("popularity", lambda: evaluate_scorer(fed.splits, popularity_scorer(fed.splits, n_items), n_items))
        timed("ALS (implicit, 64 f, 30 it)", lambda: evaluate_scorer(fed.splits, als_scorer(fed.splits, n_items),
                                                                      n_items))
        timed("BPR (implicit, 64 f, 200 it)", lambda: evaluate_scorer(fed.splits, bpr_scorer(fed.splits, n_items),
                                                                       n_items))
    model = build_model(cfg, fed.catalog, cached=False)
    initial = {k: v.numpy().copy() for k, v in trainable_state(model).items()}
    if "zeroshot" not in skip:
        timed("zero-shot MiniLM (no fine-tuning)", lambda: evaluate_model(model, cfg, fed.splits, n_items))
    central_note = ""
    if "central" not in skip:
        def central() -> dict[str, float]:
            set_global_state(model, initial)
            stats = train_central(model, fed.splits, fed.catalog, cfg, epochs=args.central_epochs, seed=0)
            nonlocal central_note
            central_note = (f"{stats.steps} steps, {stats.examples} examples, "
                            f"{stats.tokens / stats.seconds:.0f} grad tokens/s")
            return evaluate_model(model, cfg, fed.splits, n_items)

        timed(f"centralized LoRA ({args.central_epochs} epochs)", central)
    run_dir = None
    if "federated" not in skip:
        from fedrec.simulations.simulate import simulate

        def federated() -> dict[str, float]:
            nonlocal run_dir
            run_dir = simulate(cfg)
            last = json.loads((run_dir / "rounds.json").read_text())[-1]
            return {k.removeprefix("eval_"): v for k, v in last.items() if k.startswith("eval_")}

        timed(f"federated LoRA ({args.rounds} rounds x {args.clients_per_round} clients)", federated)
    write_report(Path(args.out), rows, cfg, run_dir, central_note, argv if argv is not None else sys.argv[1:])
    print(f"wrote {args.out}")
    return 0


def write_report(out: Path, rows, cfg: RunConfig, run_dir: Path | None, central_note: str, argv) -> None:
    lines = [
        f"# {Path(cfg.data.source).name}: baselines and the federated LoRA recommender",
        "",
        "Split: one test and one validation item per user with >= 5 items (numpy `default_rng(0)`, users and",
        f"items in file order), {sum(s.evaluated for s in load_federation(cfg).splits):,} evaluated users, "
        f"{len(load_federation(cfg).catalog):,} items. Full ranking over the catalog excluding the",
        "user's training items; the `sampled` columns rank the test item among 99 random negatives. Ties count",
        "against the target. Federated figures come from the federated evaluation (each client ranks for itself).",
        "",
        "| model | HR@10 | NDCG@10 | HR@10 sampled | NDCG@10 sampled | coverage@10 | wall time |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r, wall in rows:
        lines.append(f"| {name} | {r['hr@10']:.4f} | {r['ndcg@10']:.4f} | {r.get('hr@10_sampled', float('nan')):.4f} "
                     f"| {r.get('ndcg@10_sampled', float('nan')):.4f} | {r.get('coverage@10', float('nan')):.4f} "
                     f"| {wall} |")
    lines += ["", f"Command: `python -m fedrec.simulations.bench_lastfm2k {shlex.join(argv)}`", "",
              f"Machine: {machine()}. Peak RSS of the benchmark process: "
              f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB.", ""]
    if central_note:
        lines += [f"Centralized LoRA: {central_note}.", ""]
    shown = {k: v for k, v in cfg.to_flat().items() if k not in ("data.source", "run.dir")}
    lines += ["Settings: `" + json.dumps(shown)
              + "`", ""]
    if run_dir is not None:
        rounds = json.loads((run_dir / "rounds.json").read_text())
        train = [r for r in rounds if r["status"] == "ok"]
        def med(key: str) -> float:
            return float(np.median([r[key] for r in train]))
        lines += [
            "## Per-round cost of the federated run",
            "",
            "| figure | median over rounds |",
            "|---|---|",
            f"| training wall time per round | {med('train_seconds'):.1f} s |",
            f"| client updates per second | {med('client_updates_per_s'):.2f} |",
            f"| gradient tokens per second (all workers) | {med('grad_tokens_per_s'):.0f} |",
            f"| bytes down per client per round | {med('bytes_down_per_client') / 1e6:.3f} MB |",
            f"| bytes up per client per round | {med('bytes_up_per_client') / 1e6:.3f} MB |",
            f"| peak RSS of a client worker | {max(r['client_peak_rss_mb'] for r in train):.0f} MB |",
            f"| peak RSS of the server process | {max(r['server_peak_rss_mb'] for r in rounds):.0f} MB |",
            f"| final federated evaluation (all users) | {rounds[-1].get('eval_seconds', float('nan')):.0f} s |",
            "",
        ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
