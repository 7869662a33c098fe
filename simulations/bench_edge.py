"""Benchmark (not a test): what one edge device needs, on HetRec Last.fm-2K, float32 vs int8 inference.

    python -m fedrec.simulations.bench_edge --run RUN_DIR [--dp-run DP_RUN_DIR]
        [--data ../shared/data/hetrec2011-lastfm-2k] [--latency-users 200] [--secagg-clients 8]
        [--out simulations/results/edge.md]

Without `--run` it first trains an adapter with a short in-process federated run (5 rounds of 50 clients).
Measures, each figure where it is cheapest to measure honestly:

(a) NDCG@10 / HR@10 of the same adapter in float32 and in int8 (`fedrec.shared.model.quantize`) over every evaluated
    user's held-out item (the protocol of `bench_lastfm2k`: split seed 0, training items excluded), and how
    many of each user's top 10 the two share (overlap@10), for `--run`'s adapter and each `--dp-run`'s;
(b, c) per-user recommendation latency (what `fedrec recommend` runs: tokenise, score the catalog, top-k,
    reasons), model load time, and peak RSS, each variant in its own fresh subprocess (`resource.getrusage`);
(d) one device's training round with record-level DP on (`train_local_private`, default settings, one real
    user: the evaluated user with the median number of training items) in a fresh subprocess;
(e) bytes down/up per device per round: the run's rounds.csv (plain FedAvg), and a one-round in-process run with
    record DP and SecAgg+ on `--secagg-clients` users (its clients.csv, every phase summed per device);
(f) install size: du of the venv's site-packages split into torch, the bundled model and the rest;
(g) a deployed device's whole process tree (`fedrec client` + SuperNode + SuperExec + a ClientApp per message) in a
    real loopback federation on the Last.fm catalog (record DP + user DP + SecAgg+, 2 devices, 2 rounds): peak of
    the summed RSS and PSS, cold and warm catalog-table cache; then `fedrec recommend --state-dir` float32 and
    int8 on that device, exact peak RSS (`edge_tree`).
The subprocesses re-run this module with `--child`; they print one JSON line.
"""

# This module is the command line and the order of the measurements (the docstring above is its --help). The
# measurements live in `edge_probes` (the child processes), `edge_runs` (in process: quality, the SecAgg+ round,
# the run's figures) and `edge_install` (install sizes); the Markdown in `edge_report`.

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from fedrec.simulations.edge_install import install_sizes
from fedrec.simulations.edge_probes import run_child, run_probe
from fedrec.simulations.edge_report import report
from fedrec.simulations.edge_runs import int8_quality, rounds_bytes, secagg_round, train_adapter

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "hetrec2011-lastfm-2k"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--run", default="", help="run directory whose adapter to use (default: train one)")
    ap.add_argument("--dp-run", action="append", default=[], help="also measure int8 quality on this run's "
                    "adapter, e.g. one trained with user-level DP (repeatable)")
    ap.add_argument("--latency-users", type=int, default=200)
    ap.add_argument("--secagg-clients", type=int, default=8, help="0 skips the SecAgg+ bytes round")
    ap.add_argument("--skip", default="", help="comma list of: quality,latency,train,secagg,install,tree")
    ap.add_argument("--scratch", default=str(REPO / "runs"), help="where runs this script makes go")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "edge.md"))
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        kind, *rest = args.child
        print(json.dumps(run_probe(kind, rest)))
        return 0

    if not Path(args.data).is_dir():
        print(f"data directory {args.data} not found (HetRec Last.fm-2K is not shipped with fedrec)", file=sys.stderr)
        return 2
    from fedrec.shared.config import RunConfig
    from fedrec.shared.data.federation import load_federation
    from fedrec.shared.run_dir import read_config

    skip = set(filter(None, args.skip.split(",")))
    started, load_start = time.strftime("%Y-%m-%d %H:%M %Z"), os.getloadavg()
    scratch = Path(args.scratch)
    t_train = None
    if args.run:
        run = Path(args.run)
    else:
        t = time.perf_counter()
        run = train_adapter(args.data, scratch)
        t_train = time.perf_counter() - t
    cfg = RunConfig.from_mapping({**read_config(run).to_flat(), "data.source": args.data})
    fed = load_federation(cfg)
    evaluated = [s for s in fed.splits if s.evaluated]
    res: dict = {"run": str(run), "trained_here_s": t_train, "catalog_size": len(fed.catalog)}
    work = scratch / f"edge-bench-{os.getpid()}"
    work.mkdir(parents=True, exist_ok=True)

    if "install" not in skip:
        res["install"] = install_sizes()
        print("install", res["install"], flush=True)

    if "train" not in skip:
        sizes = sorted(evaluated, key=lambda s: len(s.train_items))
        user = sizes[len(sizes) // 2]
        split_file = work / "device-split.json"
        split_file.write_text(json.dumps({"user": user.user_id, "train_items": user.train_items.tolist(),
                                          "train_weights": user.train_weights.tolist(),
                                          "val_item": user.val_item, "test_item": user.test_item}))
        res["train"] = {**run_child(["train", str(run), str(split_file)]), "user": user.user_id,
                        "train_items": len(user.train_items)}
        split_file.unlink()  # a real user's history: do not leave it lying around
        print("train", {k: v for k, v in res["train"].items()}, flush=True)

    if "latency" not in skip:
        users = evaluated[: args.latency_users]
        hist_file = work / "histories.json"
        hist_file.write_text(json.dumps([{"user": s.user_id, "items": s.train_items.tolist(),
                                          "weights": s.train_weights.tolist()} for s in users]))
        res["latency"] = {v: run_child(["recommend", str(run), str(hist_file), v]) for v in ("fp32", "int8")}
        hist_file.unlink()
        a, b = res["latency"]["fp32"]["top10"], res["latency"]["int8"]["top10"]
        res["latency_top10_overlap"] = float(np.mean([len(set(a[u]) & set(b[u])) for u in a]))
        print("latency", {v: {k: x for k, x in r.items() if k not in ("latency_s", "top10")}
                          for v, r in res["latency"].items()}, flush=True)

    if "secagg" not in skip and args.secagg_clients > 0:
        res["secagg"] = secagg_round(args.data, args.secagg_clients, work)
        print("secagg", res["secagg"], flush=True)

    if "tree" not in skip:
        from fedrec.simulations.edge_tree import deployed_devices, recommend_peak

        sizes = sorted(evaluated, key=lambda s: len(s.train_items))
        users = [{"user": s.user_id, "items": [fed.catalog.item_ids[int(i)] for i in s.train_items],
                  "weights": [float(x) for x in s.train_weights]} for s in (sizes[len(sizes) // 2], sizes[-1])]
        tree = deployed_devices(run, users, work / "tree")
        warm = Path(tree["state_dirs"]["warm"])
        tree["recommend"] = {v: recommend_peak(warm, users[1], work / "tree", cache=work / "tree" / "cache-warm",
                                               int8=v == "int8") for v in ("fp32", "int8")}
        tree["history_items"] = [len(u["items"]) for u in users]
        tree.pop("histories")
        import shutil

        shutil.rmtree(work / "tree")  # the devices' state (ledgers, updates) derived from real users' histories
        res["tree"] = tree
        print("tree", tree, flush=True)

    if "quality" not in skip:  # the adapter of --run, and of each --dp-run (trained with DP noise)
        res["quality"] = [int8_quality(r, args.data) for r in [run, *map(Path, args.dp_run)]]
        print("quality", res["quality"], flush=True)

    res["rounds_csv"] = rounds_bytes(run)
    res["load"] = (load_start, os.getloadavg())
    Path(args.out).write_text(report(res, argv if argv is not None else sys.argv[1:], started, cfg))
    (Path(args.out).with_suffix(".json")).write_text(json.dumps(
        {k: v for k, v in res.items() if k != "latency"}
        | {"latency": {v: {k: x for k, x in r.items() if k != "top10"} for v, r in res.get("latency", {}).items()}},
        indent=1, default=str))
    print(f"wrote {args.out}")
    try:
        work.rmdir()
    except OSError:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
