"""Benchmark (not a test): the 20-candidate HitRatio@1 protocol of LLM-recommender papers, on our own split.

    python -m fedrec.simulations.bench_candidates [--data ../shared/data/hetrec2011-lastfm-2k] [--data-format F]
        [--rounds 40] [--clients-per-round 50] [--run LABEL=RUN_DIR ...] [--skip-training]
        [--out simulations/results/candidates.md]

Protocol. The split is fedrec's (one test and one validation item per user with >= 5 items, seed 0). For every
evaluated user, the candidates are the test item plus 19 items drawn uniformly without replacement from the items
the user never interacted with (not in training, validation or test), from one `default_rng(seed)` walked over the
users in split order, so every model ranks exactly the same 20 candidates. HR@1 = 1 when the test item scores
strictly above the 19 others (a tie counts against it), HR@5 likewise for the top 5; a random ranking gets 1/20 =
0.05 HR@1. From the same score rows, full-ranking NDCG@10 (training items excluded) is reported beside it, so the
figures connect to `lastfm2k.md` and `privacy_utility.md`.

Models: popularity and ALS (centralized, `fedrec.simulations.baselines`), zero-shot MiniLM (fedrec's untrained
start: LoRA at zero, identity head, no item bias), and fedrec trained federatedly twice, non-private and under
user-level DP-FedAvg at target epsilon 8 (Poisson sampling), each `--rounds` x `--clients-per-round` with the
Ray engine, or given as existing run directories (`--run LABEL=DIR`). fedrec is scored through
`fedrec.shared.model.scoring.score_histories`, the entry point its evaluation and CLI use, so the figure follows
the scorer whatever it becomes. Any data format fedrec reads works (`--data-format` when the name does not say).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from fedrec.shared.config import RunConfig
from fedrec.shared.data.federation import Federation, load_federation
from fedrec.shared.data.split import UserSplit
from fedrec.shared.metrics import RankingMetrics
from fedrec.shared.progress import task
from fedrec.simulations.baselines import als_scorer, popularity_scorer
from fedrec.simulations.bench_lastfm2k import add_run_arguments, machine

CANDIDATES = 20
RowScores = Callable[[list[UserSplit]], np.ndarray]
"""(len(splits), N) scores for a chunk of users."""


def draw_candidates(splits: Sequence[UserSplit], num_items: int, seed: int = 0) -> dict[str, np.ndarray]:
    """user id -> (20,) item indices, the test item first, then 19 never-seen items (see the module docstring)."""
    rng = np.random.default_rng(seed)
    out = {}
    for s in splits:
        if not s.evaluated:
            continue
        seen = np.zeros(num_items, dtype=bool)
        seen[s.train_items] = True
        seen[[s.test_item, s.val_item]] = True
        pool = np.flatnonzero(~seen)
        negatives = rng.choice(pool, size=min(CANDIDATES - 1, pool.size), replace=False)
        out[s.user_id] = np.concatenate([[s.test_item], negatives]).astype(np.int64)
    return out


def candidate_rank(row: np.ndarray, candidates: np.ndarray) -> int:
    """0-based rank of candidates[0] (the test item) among the candidates; ties count against it."""
    scores = row[candidates]
    return int(np.count_nonzero(scores[1:] >= scores[0]))


def evaluate(name: str, scores_of: RowScores, fed: Federation, candidates: dict[str, np.ndarray],
             chunk: int = 256) -> dict[str, float]:
    """HR@1 and HR@5 among the 20 candidates, full-ranking NDCG@10 and HR@10, over every evaluated user."""
    users = [s for s in fed.splits if s.evaluated]
    hits1 = hits5 = 0
    full = RankingMetrics(num_items=len(fed.catalog))
    with task(f"{name}: scoring users", total=len(users)) as bar:
        for start in range(0, len(users), chunk):
            part = users[start:start + chunk]
            rows = scores_of(part)
            for s, row in zip(part, rows, strict=True):
                r = candidate_rank(row, candidates[s.user_id])
                hits1 += r < 1
                hits5 += r < 5
                full.add_scores(row, s.test_item, s.train_items)
            bar.advance(len(part))
    summary = full.summary()
    return {"hr@1": hits1 / len(users), "hr@5": hits5 / len(users), "ndcg@10": summary["ndcg@10"],
            "hr@10": summary["hr@10"], "users": len(users)}


def per_user(fn: Callable[[UserSplit], np.ndarray]) -> RowScores:
    return lambda part: np.stack([np.asarray(fn(s), dtype=np.float64) for s in part])


def fedrec_scores(model, cfg: RunConfig, fed: Federation) -> RowScores:
    from fedrec.shared.model.scoring import score_histories

    return lambda part: score_histories(model, cfg, fed.catalog, part)


def trained_run(label: str, cfg: RunConfig) -> Path:
    """Train one federated run (Ray engine) and return its directory."""
    from fedrec.simulations.simulate import simulate

    print(f"training {label}: {cfg.run.rounds} rounds x {cfg.run.clients_per_round} clients", flush=True)
    return simulate(cfg)


def run_model(run: Path, fed: Federation, base: RunConfig):
    """The run's model, after checking it was trained on this very split."""
    from fedrec.shared.model.recommend import load_trained

    cfg, catalog, model = load_trained(run)
    mine, theirs = base.data, cfg.data
    same = (mine.split_seed, mine.min_interactions, mine.max_users) == (theirs.split_seed, theirs.min_interactions,
                                                                       theirs.max_users)
    if not same or catalog.item_ids != fed.catalog.item_ids:
        raise SystemExit(f"{run}: trained on another split or catalog than --data {base.data.source}")
    return cfg, model


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(ap)
    ap.add_argument("--epsilon", type=float, default=8.0, help="user-level target epsilon of the private run")
    ap.add_argument("--run", action="append", default=[], help="LABEL=RUN_DIR: score this finished run (repeatable)")
    ap.add_argument("--skip-training", action="store_true", help="only the baselines and the --run directories")
    ap.add_argument("--set", "-s", action="append", default=[], help="extra RunConfig KEY=VALUE for trained runs")
    ap.add_argument("--seed", type=int, default=0, help="seed of the 19 sampled candidates")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "candidates.md"))
    args = ap.parse_args(argv)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = RunConfig.from_mapping({"data.source": args.data, "data.format": args.data_format,
                                   "run.rounds": args.rounds, "run.clients_per_round": args.clients_per_round,
                                   "eval.every": args.rounds, "eval.fraction_final": 0.05,
                                   **dict(kv.split("=", 1) for kv in args.set)})
    try:
        fed = load_federation(base)
    except (OSError, ValueError) as e:
        print(f"cannot read --data {args.data}: {e}", file=sys.stderr)
        return 2
    n = len(fed.catalog)
    candidates = draw_candidates(fed.splits, n, seed=args.seed)
    rows: list[tuple[str, dict[str, float], str]] = []

    def timed(name: str, scores_of: Callable[[], RowScores], note: str = "") -> None:
        t0 = time.perf_counter()
        result = evaluate(name, scores_of(), fed, candidates)
        rows.append((name, result, f"{time.perf_counter() - t0:.0f} s{note}"))
        print(f"{name}: HR@1 {result['hr@1']:.4f}  HR@5 {result['hr@5']:.4f}  NDCG@10 {result['ndcg@10']:.4f}",
              flush=True)

    timed("popularity", lambda: per_user(popularity_scorer(fed.splits, n)))
    timed("ALS (implicit, 64 f, 30 it)", lambda: per_user(als_scorer(fed.splits, n)))
    from fedrec.shared.model.build import build_model

    zero = build_model(base, fed.catalog, cached=False)
    timed("zero-shot MiniLM (fedrec untrained)", lambda: fedrec_scores(zero, base, fed))
    runs = [tuple(kv.split("=", 1)) for kv in args.run]
    if not args.skip_training:
        private = base.updated({"user_dp.enabled": True, "user_dp.target_epsilon": args.epsilon,
                                "run.client_sampling": "poisson"})
        size = f"{args.rounds} rounds x {args.clients_per_round}"
        for label, cfg in ((f"fedrec non-private ({size})", base.updated({"run.name": f"bench-cand-none-{stamp}"})),
                           (f"fedrec user-level ε = {args.epsilon:g} ({size})",
                            private.updated({"run.name": f"bench-cand-user-{stamp}"}))):
            t0 = time.perf_counter()
            run = trained_run(label, cfg)
            runs.append((label, str(run)))
            print(f"  trained in {time.perf_counter() - t0:.0f} s -> {run}", flush=True)
    for label, run in runs:
        cfg, model = run_model(Path(run), fed, base)
        timed(label, lambda m=model, c=cfg: fedrec_scores(m, c, fed), note=f" (scoring; run {Path(run).name})")
    write_report(Path(args.out), rows, runs, argv if argv is not None else sys.argv[1:], fed)
    print(f"wrote {args.out}")
    return 0


def _privacy(run: str) -> str:
    path = Path(run) / "privacy-report.json"
    if not path.is_file():
        return "none claimed"
    acc = json.loads(path.read_text())["user_level"]["accounting"]
    return f"user-level ε = {acc['epsilon']:.3g}, δ = {acc['delta']:.2g} ({acc['accountant']})"


def write_report(out: Path, rows, runs, argv, fed: Federation) -> None:
    users = sum(s.evaluated for s in fed.splits)
    lines = [
        "# 20-candidate HitRatio@1 (the LLM-recommender protocol) on our split",
        "",
        f"Data: `{fed.summary.source}`, {len(fed.catalog):,} items, {users:,} evaluated users (fedrec's split: one "
        "test and one validation item per user with >= 5 items, seed 0). Per user: the test item + 19 items the user "
        "never interacted with, drawn once (seed 0) and shared by every model. HR@1 = the test item ranks first among "
        "the 20 (ties count against it); random ranking: 0.05. NDCG@10 / HR@10 are full ranking over the catalog "
        "(training items excluded), from the same scores.",
        "",
        "| model | HR@1 (20 cand.) | HR@5 (20 cand.) | NDCG@10 (full) | HR@10 (full) | wall time |",
        "|---|---|---|---|---|---|",
        "| random (expected) | 0.0500 | 0.2500 | | | |",
    ]
    for name, r, wall in rows:
        lines.append(f"| {name} | {r['hr@1']:.4f} | {r['hr@5']:.4f} | {r['ndcg@10']:.4f} | {r['hr@10']:.4f} | {wall} |")
    lines += ["", f"Command: `python -m fedrec.simulations.bench_candidates {shlex.join(argv)}`", "",
              f"Machine: {machine()}.", ""]
    if runs:
        lines += ["fedrec runs (trained here with the Ray engine, or given by --run), scored here through "
                  "`fedrec.shared.model.scoring.score_histories`:", ""]
        lines += [f"- {label}: `{Path(run).name}`, privacy: {_privacy(run)}" for label, run in runs]
        lines.append("")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
