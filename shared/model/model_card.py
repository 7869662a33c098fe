"""The model card of an export (`README.md`, Hugging Face's format): YAML front matter, then what a reader of the
adapter needs: how to load and score it, the data, the training protocol, the measured quality and the privacy
statement.

Everything is read from the run directory the export comes from (config.json, rounds.json, summary.json,
privacy-report.json); nothing is re-measured. The privacy section copies the signed report's figures and
plain-words statements verbatim (unit, epsilon, delta, accountant), names the report's signing key, and says
"no privacy guarantee is claimed" when there is no report: the card never states a guarantee the report does not.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fedrec.shared.config import RunConfig
from fedrec.shared.data.types import Catalog
from fedrec.shared.domain import domain

_METRICS = (("ndcg@10", "NDCG@10 (full ranking)"), ("hr@10", "HR@10 (full ranking)"),
            ("ndcg@10_sampled", "NDCG@10 (99 sampled negatives)"), ("hr@10_sampled", "HR@10 (99 sampled negatives)"),
            ("coverage@10", "catalog coverage@10"))


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _front_matter(base: str, private: bool, dom: str) -> list[str]:
    tags = ["fedrec", "recommender", "federated-learning", "lora", dom]
    if private:
        tags.append("differential-privacy")
    return ["---", f"base_model: {base}", "library_name: peft", "tags:", *[f"- {t}" for t in tags], "---", ""]


def _quality(rounds: list[dict[str, Any]] | None) -> list[str]:
    last = next((r for r in reversed(rounds or []) if "eval_ndcg@10" in r), None)
    if last is None:
        return ["No evaluation was run (for example `data.holdout = none`, or no completed round).", ""]
    users = int(last.get("eval_users", 0))
    out = [f"Federated evaluation after round {last['round']}: each of {users} users' devices ranked the whole "
           "catalog for its own held-out item (training items excluded, ties counted against the item).", "",
           "| metric | value |", "|---|---|"]
    out += [f"| {label} | {last[f'eval_{key}']:.4f} |" for key, label in _METRICS if f"eval_{key}" in last]
    return [*out, ""]


def _privacy(run: Path | None) -> list[str]:
    report = _read(run / "privacy-report.json") if run is not None else None
    if not report:
        return ["**No privacy guarantee is claimed**: this model was trained without the DP options "
                "(`record_dp.enabled`, `user_dp.enabled`).", ""]
    sig = report.get("signature") or {}
    out = [f"Copied from the signed report `privacy-report.json` (run {report['run_id']}, signed by Ed25519 key "
           f"{sig.get('key_fingerprint', 'none: unsigned')}; verify with `fedrec audit verify`). The JSON report is "
           "the authority.", "", "| guarantee | unit | epsilon | delta | accountant |", "|---|---|---|---|---|"]
    for name in ("user_level", "record_level"):
        g = report.get(name)
        if g:
            acc = g["accounting"]
            out.append(f"| {name.replace('_', '-')} | {g['privacy_unit']['unit']}: {g['privacy_unit']['description']} "
                       f"| {acc['epsilon']:.4g} | {acc['delta']:.3g} | {acc['accountant']} |")
    out.append("")
    if report.get("report_type") == "run" and not report.get("user_level"):
        out += ["No user-level guarantee: nothing bounds what the adapter reveals about one user's whole history.",
                ""]
    for name in ("user_level", "record_level", "record_level_across_devices", "empirical_audit"):
        if report.get(name):
            out += [f"> {report[name]['statement']}", ""]
    return out


def model_card(*, cfg: RunConfig, catalog: Catalog, base: str, targets: list[str], decoder: bool,
               run: Path | None) -> str:
    """The card's Markdown for an export of `run` (None: nothing but the settings is known)."""
    doc = (_read(run / "config.json") if run is not None else None) or {}
    rounds = _read(run / "rounds.json") if run is not None else None
    summary = (_read(run / "summary.json") if run is not None else None) or {}
    private = bool(run is not None and (run / "privacy-report.json").is_file())
    dom = domain(cfg.data.domain)
    ok = sum(r.get("status") == "ok" for r in rounds or [])
    lines = _front_matter(base, private, cfg.data.domain)
    lines += [
        f"# fedrec recommender{f': {run.name}' if run is not None else ''}", "",
        f"A LoRA adapter of `{base}` trained by fedrec as a federated recommender of "
        f"{dom.items}: each user's device fine-tuned it on that user's own history; the server only aggregated the "
        "updates. It scores every catalog item for a history; the files below hold everything the scores use.", "",
        "## Use", "",
        "```python",
        "from peft import PeftModel",
        "from transformers import AutoModel",
        f'model = PeftModel.from_pretrained(AutoModel.from_pretrained("{base}"), "THIS_FOLDER")',
        "# or, scored exactly as fedrec does (names or ids, reasons):",
        "from fedrec.shared.api import Recommender",
        'rec = Recommender.load("THIS_FOLDER"); rec.recommend(["item name", "..."], k=10)',
        "```", "",
        "Score of item i for a history: `(1 / T) * cos(head @ pool(model(prompt)), E[i]) + item_bias[i]`, with "
        f"T = {cfg.model.temperature}, `pool` = {'the last real token' if decoder else 'the mean over real tokens'}"
        f" of the last hidden state, `prompt` = `\"{dom.prompt_prefix} \"` + the history's "
        f"names ({'largest weight' if cfg.model.history_order == 'weight' else 'most recent'} first, each followed "
        f"by its top {cfg.model.prompt_tags} tag(s) in parentheses, comma-separated, cut at "
        f"{cfg.model.history_tokens} tokens), E = `catalog_embeddings.safetensors`, `head.weight` and "
        "`item_bias.weight` from `fedrec_state.safetensors` (absent when the run had none).", "",
        "| file | content |", "|---|---|",
        f"| adapter_config.json, adapter_model.safetensors | PEFT LoRA: r = {cfg.model.lora_rank}, alpha = "
        f"{cfg.model.lora_alpha:g}, targets {', '.join(targets)} |",
        "| fedrec_state.safetensors | every other tensor of the trained state, under fedrec's names |",
        f"| catalog_embeddings.safetensors | `embeddings` ({len(catalog)}, d): the item table, rows in catalog.json "
        "order |",
        "| catalog.json | the public catalog: item ids, names, tags |",
        "| fedrec_config.json | the run's settings (what fedrec needs to score the same way) |", "",
        "## Data", "",
        f"- source: `{cfg.data.source}` ({cfg.data.domain}), {doc.get('population', '?')} users, {len(catalog)} "
        f"{dom.items}",
        f"- split: {cfg.data.holdout} (seed {cfg.data.split_seed}; users with < {cfg.data.min_interactions} items "
        "train but are not evaluated)",
        *[f"- load: {line.strip()}" for line in doc.get("load_summary", [])], "",
        "## Training protocol", "",
        f"- {ok} of {cfg.run.rounds} rounds released an update; {cfg.run.clients_per_round} clients per round, "
        f"{cfg.run.client_sampling} sampling, {cfg.run.aggregation_weights} weights, server learning rate "
        f"{cfg.run.server_learning_rate:g}",
        f"- on each device: {cfg.train.local_epochs} epoch(s) over {cfg.train.examples_per_user} example slots, "
        f"Adam lr {cfg.train.learning_rate:g}, batch {cfg.train.batch_size}",
        f"- record-level DP-SGD: {'on' if cfg.record_dp.enabled else 'off'}; user-level DP-FedAvg: "
        f"{'on' if cfg.user_dp.enabled else 'off'}; secure aggregation: {'on' if cfg.secagg.enabled else 'off'}",
        "",
        "## Quality", "",
        *_quality(rounds),
    ]
    baseline = (summary.get("baselines") or {}).get("popularity")
    if baseline:
        lines += [f"Popularity on the same split (centralized reference): NDCG@10 {baseline['ndcg@10']:.4f}, "
                  f"HR@10 {baseline['hr@10']:.4f}.", ""]
    lines += ["## Privacy", "", *_privacy(run)]
    return "\n".join(lines)
