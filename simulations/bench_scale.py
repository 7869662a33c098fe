"""Scale on one machine: the whole Last.fm-2K population as clients, C per round, record-level DP on.

One invocation measures, on the same machine state:

1. **The bare-loop floor**: plain forward/backward + Adam on the same `Recommender` and the same batch shapes the
   private rounds use (each sampled user's K slot examples, Poisson batches of expected size
   `record-expected-batch`, the same prompt lengths), with no Opacus, no Flower, no ledger. It runs twice: in W
   processes of one thread each (how Ray runs the clients) and in one process with W threads; the faster is the
   floor. Empty Poisson batches cost the bare loop nothing (a private round still takes a noise-only step there).
2. **The federation**: `simulate()` with Flower's Ray engine (1 CPU per client actor) over every user of the data
   set, `--clients` sampled per round, record-level DP. `dp-diagnostics` is on so that devices report their
   gradient-token counts (a simulation diagnostic: under DP a deployed device does not send them).
3. With `--profile`: one round of the same settings in one process (the in-process engine, one thread) under
   cProfile, grouped into where a round's time goes.

    python -m fedrec.simulations.bench_scale --data ../shared/data/hetrec2011-lastfm-2k --rounds 10 \\
        --clients 100 --profile --out simulations/results/scale.md

Figures go to the Markdown report and a JSON file beside it; nothing here is asserted.
"""

from __future__ import annotations

import cProfile
import json
import os
import platform
import pstats
import resource
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Annotated, Any

import typer

from fedrec.shared.config import RunConfig

app = typer.Typer(add_completion=False)

SETTINGS = {"record_dp.enabled": True, "run.dp_diagnostics": True,
            "train.bias_learning_rate": 1.0}  # see privacy_utility.md


def _bare_worker(settings: dict[str, Any], users: list[int], threads: int,
                 warmup: int) -> tuple[int, float, int, int]:
    """(gradient tokens, seconds, steps, examples) of the bare loop over `users` in this process, after `warmup`
    users."""
    import numpy as np
    import torch

    from fedrec.shared.data.federation import load_federation
    from fedrec.shared.model.build import build_model
    from fedrec.shared.train.dp_sgd import plan_round, poisson_sample
    from fedrec.shared.train.examples import bucket_of, draw_examples, make_batch
    from fedrec.shared.train.local import example_loss, make_optimizer

    torch.set_num_threads(threads)
    cfg = RunConfig.from_mapping(settings, source="bench settings")
    fed = load_federation(cfg)
    model = build_model(cfg, fed.catalog)
    tokenizer = model.backbone.tokenizer
    plan = plan_round(cfg)
    tokens = steps = examples = 0
    t0 = time.perf_counter()
    for n, user in enumerate(users):
        if n == warmup:
            tokens = steps = examples = 0
            t0 = time.perf_counter()
        split = fed.splits[user]
        rng = np.random.default_rng(user)
        sampling = torch.Generator().manual_seed(user)
        model.train()
        opt = make_optimizer(model, cfg)  # a fresh optimizer per client, as in a round
        for _ in range(cfg.train.local_epochs):
            prompts, targets, hists = draw_examples(split, fed.catalog, buckets=cfg.train.examples_per_user,
                                                    order=cfg.model.history_order, rng=rng, tags=cfg.model.prompt_tags)
            slot = {bucket_of(fed.catalog.item_ids[t], cfg.train.examples_per_user): i for i, t in enumerate(targets)}
            for _ in range(plan.steps_per_epoch):
                sel = [slot[s] for s in poisson_sample(plan.num_records, plan.sample_rate, generator=sampling)
                       if s in slot]
                if not sel:
                    continue
                batch = make_batch(tokenizer, [prompts[i] for i in sel], [targets[i] for i in sel],
                                   [hists[i] for i in sel], cfg.model.history_tokens)
                opt.zero_grad(set_to_none=True)
                example_loss(model, batch.input_ids, batch.attention_mask, batch.target, batch.history).backward()
                opt.step()
                tokens += int(batch.attention_mask.sum())
                steps += 1
                examples += len(sel)
    model.eval()
    return tokens, time.perf_counter() - t0, steps, examples


def bare_floor(cfg: RunConfig, users: list[int], workers: int, warmup: int = 3) -> dict[str, Any]:
    """Bare-loop tokens/s in `workers` one-thread processes and in one `workers`-thread process."""
    ctx = get_context("spawn")
    out: dict[str, Any] = {}
    with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        shares = [users[w::workers] for w in range(workers)]
        results = list(pool.map(_bare_worker, [cfg.to_flat()] * workers, shares, [1] * workers, [warmup] * workers))
    tokens = sum(r[0] for r in results)
    out["processes"] = {"workers": workers, "threads": 1, "tokens": tokens, "steps": sum(r[2] for r in results),
                        "examples": sum(r[3] for r in results), "seconds": max(r[1] for r in results),
                        "tokens_per_s": tokens / max(r[1] for r in results)}
    with ProcessPoolExecutor(1, mp_context=ctx) as pool:
        tok, sec, steps, examples = pool.submit(_bare_worker, cfg.to_flat(), users, workers, warmup).result()
    out["threads"] = {"workers": 1, "threads": workers, "tokens": tok, "steps": steps, "examples": examples,
                      "seconds": sec, "tokens_per_s": tok / sec}
    out["floor_tokens_per_s"] = max(out["processes"]["tokens_per_s"], out["threads"]["tokens_per_s"])
    return out


# (label, [(file suffix, function name)]): cumulative times of disjoint call subtrees of one round
PROFILE_GROUPS = [
    ("forward (model + Opacus activation hooks)", [("shared/training.py", "example_loss")]),
    ("backward (incl. Opacus per-example gradients)", [("torch/_tensor.py", "backward")]),
    ("DP optimizer step: clip, noise, Adam", [("opacus/optimizers/optimizer.py", "step")]),
    ("Opacus wrap/unwrap per client", [("grad_sample_module.py", "__init__"),
                                       ("grad_sample_module.py", "to_standard_module")]),
    ("opacus#820 check (first step)", [("shared/dp_sgd.py", "__init__"), ("shared/dp_sgd.py", "verify")]),
    ("example drawing + tokenising", [("shared/examples.py", "draw_examples"), ("shared/examples.py", "make_batch")]),
    ("device ledger, accountant, signed report", [("client/privacy_report.py", "write_device_report"),
                                                  ("shared/dp_sgd.py", "record_epsilon"),
                                                  ("client/device_state.py", "save_ledger"),
                                                  ("client/device_state.py", "load_ledger")]),
    ("message arrays <-> numpy (both sides)", [("shared/wire.py", "state_to_record"),
                                               ("shared/wire.py", "record_to_state")]),
    ("server: aggregate + write adapter", [("server/aggregate.py", "weighted_mean"),
                                           ("server/aggregate.py", "apply_update"),
                                           ("shared/run_dir.py", "write_adapter")]),
]


def profile_round(cfg: RunConfig) -> dict[str, Any]:
    """One training round of `cfg` (in-process engine, one thread) under cProfile, grouped by PROFILE_GROUPS."""
    import torch

    from fedrec.simulations.simulate import simulate

    torch.set_num_threads(1)
    warm = cfg.updated({"run.rounds": 1, "run.clients_per_round": 2, "run.name": f"{cfg.run.name}-warm",
                        "eval.every": 10**6, "eval.fraction_final": min(cfg.eval.fraction_final, 0.01)})
    simulate(warm, engine="inprocess")  # loads data, backbone and table once, as a worker would
    one = cfg.updated({"run.rounds": 2, "run.name": f"{cfg.run.name}-profile", "eval.every": 10**6,
                       "eval.fraction_final": 0.01})
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    run = simulate(one, engine="inprocess")
    prof.disable()
    total = time.perf_counter() - t0
    rounds = json.loads((run / "rounds.json").read_text())
    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    groups = {}
    for label, keys in PROFILE_GROUPS:
        groups[label] = sum(ct for (file, _, name), (_, _, _, ct, _) in stats.items()
                            if any(file.endswith(suffix) and name == fn for suffix, fn in keys))
    train_s = sum(r["train_seconds"] for r in rounds)
    eval_s = sum(r.get("eval_seconds", 0.0) for r in rounds)
    return {"rounds": len(rounds), "clients_per_round": cfg.run.clients_per_round, "wall_seconds": total,
            "train_phase_seconds": train_s, "eval_phase_seconds": eval_s, "groups": groups}


def summarise(run: Path, workers: int) -> dict[str, Any]:
    """Per-round figures of a finished federation run."""
    import csv

    rounds = json.loads((run / "rounds.json").read_text())
    train = [r for r in rounds if "train_seconds" in r]
    steady = train[1:] or train  # round 1 includes the workers' start-up (model load, catalog table)
    from fedrec.shared.run_dir import clients_dir, read_config

    rows_at = clients_dir(run, read_config(run)) / "clients.csv"  # private under record DP
    clients = [r for r in csv.DictReader(open(rows_at, encoding="utf-8")) if r["phase"] == "train"]
    busy = {}
    for r in clients:
        if r.get("seconds"):
            busy[r["round"]] = busy.get(r["round"], 0.0) + float(r["seconds"])
    final = next((r for r in reversed(rounds) if "eval_ndcg@10" in r), {})

    def med(key: str, rows: list[dict] = steady) -> float:
        return float(statistics.median(float(r[key]) for r in rows))

    wall = [r["wall_seconds"] for r in train if r["round"] != rounds[-1]["round"]] or [r["wall_seconds"] for r in train]
    return {
        "rounds": len(train),
        "round1_train_seconds": train[0]["train_seconds"],
        "median_train_seconds": med("train_seconds"),
        "max_train_seconds": max(r["train_seconds"] for r in steady),
        "median_round_wall_seconds": float(statistics.median(wall)),
        "rounds_per_hour": 3600.0 / float(statistics.mean(wall)),
        "client_updates_per_s": med("client_updates_per_s"),
        "grad_tokens_per_s": med("grad_tokens_per_s"),
        "grad_tokens_per_s_all_rounds": med("grad_tokens_per_s", train),
        "client_busy_fraction": float(statistics.median(busy[str(r["round"])] / (workers * r["train_seconds"])
                                                        for r in steady if str(r["round"]) in busy)),
        "client_peak_rss_mb": max(float(r["client_peak_rss_mb"]) for r in train),
        "server_peak_rss_mb": max(float(r["server_peak_rss_mb"]) for r in rounds),
        "bytes_down_per_round": int(med("bytes_down_per_client") * med("updates")),
        "bytes_up_per_round": int(med("bytes_up_per_client") * med("updates")),
        "bytes_per_client": int(med("bytes_down_per_client")),
        "sampled_eval_seconds": [r["eval_seconds"] for r in rounds[:-1] if "eval_seconds" in r],
        "final_eval_seconds": final.get("eval_seconds"),
        "final_eval_users": final.get("eval_users"),
        "final_ndcg@10": final.get("eval_ndcg@10"),
        "final_hr@10": final.get("eval_hr@10"),
        "declined": sum(int(r.get("declined", 0)) for r in train),
        # the run's signed report: per-device record-level epsilons as the devices reported them
        "record_level": json.loads((run / "privacy-report.json").read_text())["record_level_across_devices"],
    }


def machine() -> str:
    return (f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), "
            f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB RAM, "
            f"Python {platform.python_version()}, {platform.system()} {platform.machine()}")


def render(res: dict[str, Any], argv: list[str]) -> str:
    fed, floor, cfg = res["federation"], res["floor"], res["settings"]
    rec = fed["record_level"]
    eps = rec["epsilon"]
    bare = floor["processes"]
    per_step = bare["examples"] / bare["steps"] if bare.get("examples") else float("nan")
    per_example = bare["tokens"] / bare["examples"] if bare.get("examples") else float("nan")
    ratio = floor["floor_tokens_per_s"] / fed["grad_tokens_per_s"] if fed["grad_tokens_per_s"] else float("inf")
    lines = [
        "# Scale: the whole Last.fm-2K population on one machine",
        "",
        f"Reproduce: `python -m fedrec.simulations.bench_scale {' '.join(argv)}`",
        "",
        f"Machine: {machine()}. Measured {time.strftime('%Y-%m-%d')}. Engine: Flower simulation (Ray), "
        f"{res['workers']} client actors of 1 CPU each. Population {res['population']} clients, "
        f"{cfg['run.clients_per_round']} sampled per round, {fed['rounds']} rounds, record-level DP-SGD on every "
        f"device "
        f"(z = {cfg['record_dp.noise_multiplier']:.3g}, expected batch {cfg['record_dp.expected_batch']} of "
        f"K = {cfg['train.examples_per_user']} slots), one local epoch.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| training round of {cfg['run.clients_per_round']} clients, median (max) | "
        f"{fed['median_train_seconds']:.1f} s "
        f"({fed['max_train_seconds']:.1f} s) |",
        f"| first round (workers start, load model and catalog table) | {fed['round1_train_seconds']:.1f} s |",
        f"| rounds per hour (with the sampled evaluations) | {fed['rounds_per_hour']:.0f} |",
        f"| client updates per second | {fed['client_updates_per_s']:.2f} |",
        f"| gradient tokens per second, federation (median round) | {fed['grad_tokens_per_s']:.0f} |",
        f"| bare loop, {floor['processes']['workers']} processes x 1 thread | "
        f"{floor['processes']['tokens_per_s']:.0f} tokens/s |",
        f"| bare loop, 1 process x {floor['threads']['threads']} threads | {floor['threads']['tokens_per_s']:.0f} "
        "tokens/s |",
        f"| floor / federation | {ratio:.2f}x |",
        f"| share of the training phase the client actors spent in DP-SGD training (sum of train-seconds) | "
        f"{fed['client_busy_fraction']:.0%} |",
        f"| peak RSS per client worker | {fed['client_peak_rss_mb']:.0f} MB |",
        f"| peak RSS of the server process | {fed['server_peak_rss_mb']:.0f} MB |",
        f"| bytes per round, down / up | {fed['bytes_down_per_round'] / 1e6:.1f} MB / "
        f"{fed['bytes_up_per_round'] / 1e6:.1f} MB ({fed['bytes_per_client'] / 1e6:.2f} MB per client each way) |",
        f"| sampled evaluations ({cfg['eval.fraction']:.0%} of users every {cfg['eval.every']} rounds) | "
        f"{', '.join(f'{s:.0f} s' for s in fed['sampled_eval_seconds']) or '-'} |",
        f"| final evaluation of all {int(fed['final_eval_users'])} evaluable users | "
        f"{fed['final_eval_seconds']:.0f} s |",
        f"| NDCG@10 / HR@10 after the run (full ranking) | {fed['final_ndcg@10']:.4f} / {fed['final_hr@10']:.4f} |",
        f"| devices that declined (budget) | {fed['declined']} |",
        f"| record-level ε per device at δ = {rec['delta']:g} ({rec['accountant']}), over the {rec['devices']} devices "
        f"that trained: min / median / p90 / max | {eps['min']:.2f} / {eps['median']:.2f} / {eps['p90']:.2f} / "
        f"{eps['max']:.2f} |",
        f"| whole run, wall | {res['federation_wall_seconds']:.0f} s |",
        "",
        "Privacy unit of the ε row: one training-example slot of one device (one of its K fixed slots of listening "
        "records; a single record is covered at (2ε, (1+e^ε)δ) by group privacy), never a user's whole history; "
        "each figure is cumulative over every round that device trained in (a device trains in about "
        f"{cfg['run.clients_per_round'] / res['population'] * fed['rounds']:.1f} of the {fed['rounds']} rounds). "
        "The authority is each device's own signed report.",
        "",
        "The floor is measured on the private rounds' batch shapes: Poisson batches of about "
        f"{cfg['record_dp.expected_batch']} examples (non-empty steps averaged {per_step:.1f}), each one slot's "
        f"records "
        f"as a prompt of {per_example:.0f} tokens on average (capped at {cfg['model.history_tokens']}), scored "
        f"against the "
        "whole catalog. The 2,900-3,400 tokens/s of MiniLM + LoRA in `../shared/notes/recsys-protocol.md` are for "
        "batches of 32 sequences of 64 or 32 tokens: other shapes, not comparable with this floor.",
        "",
    ]
    if "profile" in res:
        p = res["profile"]
        per_round = p["train_phase_seconds"] / p["rounds"]
        lines += [
            f"## Where a round's time goes ({p['clients_per_round']} clients, one process, one thread, cProfile)",
            "",
            f"Training phase {per_round:.1f} s per round ({per_round / p['clients_per_round']:.2f} s per client).",
            "",
            "| part | seconds per round | share |",
            "|---|---|---|",
        ]
        accounted = 0.0
        for label, sec in p["groups"].items():
            accounted += sec / p["rounds"]
            lines.append(f"| {label} | {sec / p['rounds']:.2f} | {sec / p['train_phase_seconds']:.0%} |")
        rest = per_round - accounted
        lines += [f"| everything else (Flower message handling, config parsing, delta arithmetic, ...) | "
                  f"{rest:.2f} | {rest / per_round:.0%} |", ""]
    lines += ["Settings: `" + json.dumps(cfg) + "`", ""]
    return "\n".join(lines)


@app.command()
def main(
    data: Annotated[str, typer.Option()] = "../shared/data/hetrec2011-lastfm-2k",
    rounds: Annotated[int, typer.Option()] = 10,
    clients: Annotated[int, typer.Option()] = 100,
    workers: Annotated[int, typer.Option(help="client actors (CPUs)")] = 0,
    bare_users: Annotated[int, typer.Option(help="users in the bare-loop floor")] = 60,
    profile: Annotated[bool, typer.Option(help="also profile one round in-process")] = False,
    evaluate_every: Annotated[int, typer.Option()] = 5,
    fraction_evaluate: Annotated[float, typer.Option()] = 0.05,
    set_: Annotated[list[str], typer.Option("--set", "-s")] = [],  # noqa: B006
    run_dir: Annotated[str, typer.Option()] = "runs/bench-scale",
    out: Annotated[Path, typer.Option()] = Path("simulations/results/scale.md"),
) -> None:
    """Measure the federation against the bare-loop floor; write `out` and `out` with .json."""
    from fedrec.shared.data.federation import load_federation
    from fedrec.simulations.simulate import simulate

    workers = workers or os.cpu_count() or 1
    overrides = dict(p.split("=", 1) for p in set_)
    cfg = RunConfig.from_mapping({"data.source": data, "run.rounds": rounds, "run.clients_per_round": clients,
                                  "eval.every": evaluate_every, "eval.fraction": fraction_evaluate, "run.dir": run_dir,
                                  "run.name": f"scale-{time.strftime('%Y%m%d-%H%M%S')}", **SETTINGS, **overrides},
                                 source="--set")
    population = len(load_federation(cfg).splits)
    users = list(range(0, population, max(1, population // bare_users)))[:bare_users]
    res: dict[str, Any] = {"population": population, "workers": workers, "settings": cfg.to_flat()}
    print(f"bare-loop floor over {len(users)} users ...", flush=True)
    res["floor"] = bare_floor(cfg, users, workers)
    print(json.dumps(res["floor"]), flush=True)
    t0 = time.perf_counter()
    run = simulate(cfg, num_cpus=workers, on_event=lambda kind, p: kind == "round" and print(
        f"round {p.get('round')}: {p.get('train_seconds')} s train, {p.get('wall_seconds')} s wall", flush=True))
    res["federation_wall_seconds"] = time.perf_counter() - t0
    res["run_dir"] = str(run)
    res["federation"] = summarise(run, workers)
    res["settings"] = json.loads((run / "config.json").read_text())["config"]  # z as resolved
    if profile:
        print("profiling one round in-process ...", flush=True)
        res["profile"] = profile_round(cfg)
    res["bench_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=1) + "\n")
    out.write_text(render(res, sys.argv[1:]))
    print(out.read_text())


if __name__ == "__main__":
    app()
