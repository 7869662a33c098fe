"""Privacy-utility of the hybrid recommender on Last.fm-2K: one command, every row, baselines in the same run.

    python -m fedrec.simulations.bench_privacy_utility --data ../shared/data/hetrec2011-lastfm-2k \\
        --out simulations/results/privacy_utility.md [--lora-run RUN] [--federated RUN ...]

What it does, in order (all on split seed 0, 1,877 evaluated users, full ranking, pessimistic ties):

1. Centralized references (non-private, they see everyone's data): popularity, ALS (implicit; the protocol's
   64 factors and a grid chosen on validation), EASE and ItemKNN over artists with >= 2 listeners (chosen on
   validation).
2. For every privacy setting (non-private; user-level epsilon 8, 4, 2, 1, 0.5; record-level 8, 4, 1; both at 8):
   each model family (popularity + co-occurrence, popularity + text cross, all three; popularity alone and
   popularity + co-occurrence under record-level DP) has its release phase computed through fedrec's own code
   (`simulations.hybrid_releases`: calibration, specs, noise, post-processing) on two *tuning* noise seeds; the
   blend weights are chosen on the validation artist; the family with the best validation NDCG@10 is the row.
   Its test figures come from fresh noise seeds (0, 1, 2 for non-private, epsilon 1 and 8; 0 otherwise).
3. The trivially private floor (zero-shot MiniLM + popularity of top-50 indicators released once under DP, blend
   weight 0.5 or 1 chosen on validation) and DP popularity alone, at every epsilon, in the same run.
4. `--lora-run`: the LoRA ablation, the non-private hybrid with the adapter of that run as one more component
   (its weight chosen on validation). `--federated`: rows read from real federated runs (`fedrec simulate
   --preset hybrid-eps8`, ...), their NDCG@10 and wall time as the federation measured them.

Writes the markdown table, `<out>.json` and `<out>.png` (NDCG@10 against epsilon, the floor drawn in).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from fedrec.shared.config import RunConfig
from fedrec.simulations.hybrid_eval import EvalData, als_scores, blend, ease_scores, grid_search, itemknn_scores, tuned
from fedrec.simulations.hybrid_releases import Parts, Population, ReleasePhase, describe, run_phase

app = typer.Typer(add_completion=False)

TUNE_SEEDS = (100, 101)  # noise seeds the weights are chosen on; the reported rows never use them
POP = {"hybrid.popularity_k": 25}
GRAM = {"hybrid.gram_head": 300, "hybrid.gram_k": 20, "hybrid.gram_lambda": 100.0, "hybrid.gram_edge": 0.7}
CROSS = {"hybrid.cross_items": 3000, "hybrid.cross_k": 25, "hybrid.cross_rank": 32, "hybrid.cross_lambda": 100.0}
FAMILIES: dict[str, dict[str, Any]] = {
    "pop": {"hybrid.releases": "popularity", "hybrid.shares": "popularity:1", **POP},
    "pop+gram": {"hybrid.releases": "popularity,cooccurrence", "hybrid.shares": "popularity:0.25,cooccurrence:0.75",
                 **POP, **GRAM},
    "pop+cross": {"hybrid.releases": "popularity,cross", "hybrid.shares": "popularity:0.25,cross:0.75", **POP,
                  **CROSS},
    "pop+gram+cross": {"hybrid.releases": "popularity,cooccurrence,cross",
                       "hybrid.shares": "popularity:0.25,cooccurrence:0.5625,cross:0.1875", **POP, **GRAM, **CROSS},
}
NONPRIVATE = {"hybrid.gram_head": 2000, "hybrid.gram_k": 50, "hybrid.cross_rank": 128, "hybrid.cross_k": 50}
#: exact counts allow a larger head: the non-private row also tries EASE over (nearly) every user's whole history
NONPRIVATE_WIDE = {**NONPRIVATE, "hybrid.gram_head": 6000, "hybrid.gram_k": 500}
THRESHOLDS = (0.0, 1.5)  # hybrid.popularity_threshold under DP, chosen on validation
GRIDS = {"text": (1.0,), "pop": (0.0, 0.1, 0.3, 1.0), "gram": (0.5, 1.5, 3.0, 6.0), "cross": (0.3, 0.7)}


@dataclass(frozen=True)
class Setting:
    name: str
    unit: str  # "none", "user", "record slot", "user + record slot"
    epsilon: float | None
    families: tuple[str, ...]
    seeds: tuple[int, ...]

    def variants(self) -> list[str]:
        """Each family, and under DP each with the popularity threshold at 0 and at 1.5 noise stds."""
        if self.unit == "none":
            return list(self.families)
        return [f"{f} τ{t:g}" for f in self.families for t in THRESHOLDS]

    def config(self, variant: str, base: RunConfig) -> RunConfig:
        """A variant ("pop+gram", "pop+gram wide", "pop+gram τ1.5") as the settings of a run."""
        family, _, tau = variant.partition(" τ")
        wide = family.endswith(" wide")
        values: dict[str, Any] = {**FAMILIES[family.removesuffix(" wide")], "run.rounds": 0}
        if self.unit == "none":
            values.update(NONPRIVATE_WIDE if wide else NONPRIVATE)
        else:  # noisy counts below tau noise stds become 0 (the tail is mostly noise)
            values["hybrid.popularity_threshold"] = float(tau or 0.0)
        if "user" in self.unit:
            values.update({"user_dp.enabled": True, "user_dp.target_epsilon": self.epsilon,
                           "user_dp.noise": "distributed" if "distributed" in self.unit else "server"})
        if "record" in self.unit:
            values.update({"record_dp.enabled": True, "record_dp.target_epsilon": self.epsilon})
        return base.updated(values, source=f"bench row {self.name}")


def settings() -> list[Setting]:
    three = ("pop+gram", "pop+cross", "pop+gram+cross")
    out = [Setting("non-private", "none", None, ("pop+gram", "pop+gram+cross", "pop+gram wide"), (0,))]
    out += [Setting(f"user ε={e:g}", "user", e, three, (0, 1, 2) if e in (8, 1) else (0,)) for e in (8, 4, 2, 1, 0.5)]
    out += [Setting(f"record ε={e:g}", "record slot", e, ("pop", "pop+gram"), (0,)) for e in (8, 4, 1)]
    out.append(Setting("both ε=8", "user + record slot", 8.0, ("pop+gram",), (0,)))
    # the clients add the noise (Skellam shares under SecAgg+): every device's encoding simulated, so the family
    # is the central ε = 8 row's (its threshold and weights are tuned again on validation)
    out.append(Setting("user ε=8 distributed", "user (distributed)", 8.0, ("pop+gram",), (0, 1, 2)))
    return out


def weights_grid(parts: dict[str, np.ndarray]) -> dict[str, tuple[float, ...]]:
    return {k: v for k, v in GRIDS.items() if k in parts}


def run_family(setting: Setting, family: str, base: RunConfig, pop: Population, parts: Parts,
               ) -> tuple[float, dict[str, float], RunConfig]:
    """(validation NDCG@10 averaged over the tuning seeds, chosen weights, the row's config)."""
    cfg = setting.config(family, base)
    by_seed = [parts.of(run_phase(cfg, pop, seed).released) for seed in TUNE_SEEDS]
    val, weights = grid_search(pop.data, by_seed, weights_grid(by_seed[0]))
    return val, weights, cfg


def report_row(setting: Setting, family: str, cfg: RunConfig, weights: dict[str, float], pop: Population,
               parts: Parts, val: float) -> dict[str, Any]:
    """The row's test figures over its report seeds (mean, sd), its privacy and cost."""
    per: list[dict[str, float]] = []
    phase: ReleasePhase | None = None
    check = None
    for seed in setting.seeds:
        phase = run_phase(cfg, pop, seed)
        t0 = time.perf_counter()
        scores = blend(parts.of(phase.released), weights, len(pop.data.users))
        figures = pop.data.metrics(scores)
        figures["score_seconds"] = time.perf_counter() - t0
        per.append(figures)
        if check is None:  # the matrices agree with HybridScorer, and the ranking with evaluate_scorer
            check = {"max_abs_vs_hybrid_scorer": parts.check(phase.released, weights),
                     **{f"evaluate_scorer_{k}": v for k, v in pop.data.check(np.asarray(scores)).items()}}
    assert phase is not None
    return {"setting": setting.name, "unit": setting.unit, "target_epsilon": setting.epsilon, "family": family,
            "weights": weights, "val_tuning": val, **_stats(per), **describe(phase),
            "seeds": list(setting.seeds), "check": check}


def _stats(per: list[dict[str, float]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("val", "test", "test_hr", "test_cold", "score_seconds"):
        values = np.array([p[key] for p in per], dtype=np.float64)
        out[key] = float(values.mean())
        out[f"{key}_sd"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return out


def floor_rows(pop: Population, parts: Parts, base: RunConfig, epsilon: float | None) -> list[dict[str, Any]]:
    """The floor (zero-shot MiniLM + DP popularity of top-50 indicators, w in {0.5, 1} on validation) and DP
    popularity alone, at `epsilon` (None: exact counts)."""
    values: dict[str, Any] = {"hybrid.releases": "popularity", "hybrid.shares": "popularity:1",
                              "hybrid.popularity_k": 50, "run.rounds": 0}
    if epsilon is not None:
        values.update({"user_dp.enabled": True, "user_dp.target_epsilon": epsilon})
    cfg = base.updated(values, source="floor")
    phase = run_phase(cfg, pop, 0)
    popularity = parts.of(phase.released)["pop"]
    both = {"text": parts.floor_text, "pop": popularity}
    val, w = grid_search(pop.data, [both], {"text": (1.0,), "pop": (0.5, 1.0)})
    n = len(pop.data.users)
    label = "non-private" if epsilon is None else f"ε={epsilon:g}"
    return [{"setting": f"floor {label}", "target_epsilon": epsilon, "weights": w, **describe(phase),
             **pop.data.metrics(blend(both, w, n))},
            {"setting": f"DP popularity {label}", "target_epsilon": epsilon, **describe(phase),
             **pop.data.metrics(blend({"pop": popularity}, {"pop": 1.0}, n))}]


def central_rows(pop: Population) -> list[dict[str, Any]]:
    """Popularity, ALS (protocol and tuned), EASE and ItemKNN, each chosen on validation."""
    data, rows = pop.data, []
    t0 = time.perf_counter()
    counts = np.asarray(data.binary.sum(0)).ravel().astype(np.float32)
    rows.append({"setting": "popularity (central)", **data.metrics(np.broadcast_to(counts, (len(data.users),
                                                                                             data.num_items)))})
    rows.append({"setting": "ALS protocol 64f (central)", **data.metrics(als_scores(data, 64, 0.01, 1.0))})
    for name, build, grid in (("ALS tuned", als_scores, {"factors": (64, 128), "regularization": (1.0, 10.0),
                                                         "alpha": (1.0,)}),
                              ("EASE", ease_scores, {"lam": (50.0, 100.0, 200.0, 400.0)}),
                              ("ItemKNN", itemknn_scores, {"alpha": (1.0, 2.0)})):
        t1 = time.perf_counter()
        figures, params = tuned(data, lambda b=build, **p: b(data, **p), grid)
        rows.append({"setting": f"{name} (central)", "params": params, **figures,
                     "seconds": round(time.perf_counter() - t1, 1)})
    rows[0]["seconds"] = round(time.perf_counter() - t0, 1)
    return rows


def lora_rows(pop: Population, parts: Parts, run: Path, np_row: dict[str, Any], base: RunConfig,
              ) -> list[dict[str, Any]]:
    """The non-private hybrid with and without the LoRA adapter of `run` (its weight chosen on validation)."""
    from fedrec.shared.model.recommend import load_trained
    from fedrec.shared.model.scoring import score_users
    from fedrec.simulations.hybrid_eval import maxnorm_rows

    _, catalog, model = load_trained(run)
    cfg = base.updated({"hybrid.releases": ""}, source="lora ablation")
    lora = maxnorm_rows(score_users(model, pop.data.evaluated, catalog, cfg).astype(np.float32))
    setting = next(s for s in settings() if s.name == "non-private")
    cfg_np = setting.config(np_row["family"], base)  # the non-private row's family (exact sums: no noise seed)
    released = run_phase(cfg_np, pop, 0).released
    both = {**parts.of(released), "lora": lora}
    n = len(pop.data.users)
    val, w = grid_search(pop.data, [both], {**weights_grid(parts.of(released)), "lora": (0.0, 0.25, 0.5, 1.0)})
    for k, v in np_row["weights"].items():
        w.setdefault(k, v)
    return [{"setting": "LoRA alone (zero-shot tower fine-tuned)", **pop.data.metrics(lora), "run": str(run)},
            {"setting": "non-private hybrid + LoRA (weights on validation)", "weights": w, "val_tuning": val,
             **pop.data.metrics(blend(both, w, n)), "run": str(run)}]


def federated_rows(runs: list[Path]) -> list[dict[str, Any]]:
    """Rows from real federated runs: their summary.json (status, evaluation, wall time, privacy)."""
    out = []
    for run in runs:
        doc = json.loads((run / "summary.json").read_text())
        ev = doc.get("evaluation") or {}
        privacy = ((doc.get("privacy") or {}).get("user_level") or (doc.get("privacy") or {}).get("record_level")
                   or {})
        out.append({"setting": f"federated {run.name}", "status": doc["status"], "test": ev.get("ndcg@10"),
                    "test_hr": ev.get("hr@10"), "users": ev.get("users"), "epsilon": privacy.get("epsilon"),
                    "delta": privacy.get("delta"), "unit": privacy.get("unit"), "seconds": doc.get("seconds"),
                    "statistics": doc.get("statistics")})
    return out


@app.command()
def main(
    data: Annotated[str, typer.Option(help="the HetRec Last.fm-2K directory")] = "../shared/data/hetrec2011-lastfm-2k",
    out: Annotated[Path, typer.Option(help="markdown table; .json and .png beside it")] = Path(
        "simulations/results/privacy_utility.md"),
    lora_run: Annotated[Path | None, typer.Option(help="a LoRA run directory for the ablation")] = None,
    federated: Annotated[list[Path], typer.Option(help="a federated hybrid run directory (repeatable)")] = [],  # noqa: B006
    only: Annotated[list[str], typer.Option(help="run only these settings (by name), for a quick look")] = [],  # noqa: B006
    central: Annotated[bool, typer.Option(help="the centralized references (minutes); off for a quick look")] = True,
    from_json: Annotated[Path | None, typer.Option(
        help="reuse the rows of an earlier run's JSON and only add --lora-run / --federated rows")] = None,
    merge_into: Annotated[Path | None, typer.Option(
        help="run the --only settings and put their rows into this earlier run's JSON (same names replaced), "
             "keeping its other rows, floors and references; the report is rewritten from it")] = None,
) -> None:
    """Regenerate the privacy-utility table (see the module docstring)."""
    from fedrec.shared.data.federation import load_federation
    from fedrec.shared.hybrid.text import text_features
    from fedrec.shared.model.build import build_model
    from fedrec.simulations.privacy_utility_report import write_report

    started = time.perf_counter()
    if from_json is not None:
        _add_to(json.loads(from_json.read_text()), data, out, lora_run, list(federated), started)
        return
    base = RunConfig.from_mapping({"data.source": data})
    fed = load_federation(base)
    table = build_model(base, fed.catalog).catalog.detach().cpu().numpy()
    pop = Population(EvalData(list(fed.splits), len(fed.catalog)), fed.catalog, table, text_features(table))
    parts = Parts(pop)
    if merge_into is not None:
        merged = json.loads(merge_into.read_text())
        new = {r["setting"]: r for r in _rows(only, base, pop, parts)}
        # the floor at each of their epsilons, recomputed in the same run (same seeds, so the same figures)
        floors = {e: floor_rows(pop, parts, base, e) for e in {r["target_epsilon"] for r in new.values()}}
        fresh = {r["setting"]: r for rows in floors.values() for r in rows}
        merged["floors"] = [fresh.pop(r["setting"], r) for r in merged["floors"]] + list(fresh.values())
        merged["rows"] = [new.pop(r["setting"], r) for r in merged["rows"]] + list(new.values())
        merged["merged_command"] = ("python -m fedrec.simulations.bench_privacy_utility " + " ".join(
            [f"--data {data}", f"--out {out}", f"--merge-into {merge_into}"] + [f"--only '{o}'" for o in only]))
        merged["merged_seconds"] = round(time.perf_counter() - started, 1)
        write_report(merged, out)
        print(f"wrote {out} ({merged['merged_seconds']:.0f} s)")
        return
    doc: dict[str, Any] = {"command": "python -m fedrec.simulations.bench_privacy_utility " + " ".join(
        [f"--data {data}", f"--out {out}"] + ([f"--lora-run {lora_run}"] if lora_run else [])
        + [f"--federated {r}" for r in federated]), "users": len(pop.data.splits),
        "evaluated": len(pop.data.users), "items": pop.data.num_items,
        "cold_users": int(pop.data.cold["test"].sum()), "rows": [], "floors": [],
        "central": central_rows(pop) if central else []}
    print(f"central references done ({time.perf_counter() - started:.0f} s)", flush=True)
    doc["rows"] = _rows(only, base, pop, parts)
    for eps in (None, 8.0, 4.0, 2.0, 1.0, 0.5):
        doc["floors"] += floor_rows(pop, parts, base, eps)
    np_row = next((r for r in doc["rows"] if r["setting"] == "non-private"), None)
    doc["lora"] = lora_rows(pop, parts, lora_run, np_row, base) if lora_run and np_row else []
    doc["federated"] = federated_rows(list(federated))
    doc["seconds"] = round(time.perf_counter() - started, 1)
    write_report(doc, out)
    print(f"wrote {out} ({doc['seconds']:.0f} s)")


def _rows(only: list[str], base: RunConfig, pop: Population, parts: Parts) -> list[dict[str, Any]]:
    """The rows of every setting (or of those named in `only`), each tuned on validation and reported on test."""
    rows = []
    for setting in settings():
        if only and setting.name not in only:
            continue
        t0 = time.perf_counter()
        tried = {f: run_family(setting, f, base, pop, parts) for f in setting.variants()}
        family = max(tried, key=lambda f: tried[f][0])
        val, weights, cfg = tried[family]
        row = report_row(setting, family, cfg, weights, pop, parts, val)
        row["families_val"] = {f: v[0] for f, v in tried.items()}
        row["seconds"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
        print(f"{setting.name:14s} {family:15s} val {val:.4f} test {row['test']:.4f}±{row['test_sd']:.4f} "
              f"cold {row['test_cold']:.4f} ε {row['epsilon']} ({row['seconds']:.0f} s)", flush=True)
    return rows


def _add_to(doc: dict[str, Any], data: str, out: Path, lora_run: Path | None, federated: list[Path],
            started: float) -> None:
    """Add the LoRA ablation and federated rows to an earlier run's document (its rows are kept as computed)."""
    from fedrec.shared.data.federation import load_federation
    from fedrec.shared.hybrid.text import text_features
    from fedrec.shared.model.build import build_model
    from fedrec.simulations.privacy_utility_report import write_report

    if lora_run is not None:
        base = RunConfig.from_mapping({"data.source": data})
        fed = load_federation(base)
        table = build_model(base, fed.catalog).catalog.detach().cpu().numpy()
        pop = Population(EvalData(list(fed.splits), len(fed.catalog)), fed.catalog, table, text_features(table))
        np_row = next(r for r in doc["rows"] if r["setting"] == "non-private")
        doc["lora"] = lora_rows(pop, Parts(pop), lora_run, np_row, base)
        doc["command"] += f" --lora-run {lora_run}"
    if federated:  # added to the earlier ones (a run of the same name replaces its row)
        new = {r["setting"]: r for r in federated_rows(federated)}
        doc["federated"] = [new.pop(r["setting"], r) for r in doc.get("federated", [])] + list(new.values())
        doc["command"] += "".join(f" --federated {r}" for r in federated)
    doc["seconds"] = round(float(doc["seconds"]) + time.perf_counter() - started, 1)
    write_report(doc, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    app()
