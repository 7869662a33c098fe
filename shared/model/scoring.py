"""Scores over the whole catalog for histories: the one place evaluation, recommendation, `fedrec score`, the
Python API (`fedrec.shared.api`) and the benchmarks rank with.

`score_histories` is the entry point: histories in, one row of scores over the catalog per history out. Whatever
the recommender becomes (more components, another scorer), callers keep calling it and follow.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from fedrec.shared.config import RunConfig
from fedrec.shared.data.split import UserSplit
from fedrec.shared.data.types import Catalog, UserHistory
from fedrec.shared.hybrid.scorer import HybridScorer
from fedrec.shared.hybrid.text import text_features
from fedrec.shared.model.build import catalog_key
from fedrec.shared.model.catalog_table import catalog_texts, encode_texts
from fedrec.shared.model.recommender import Recommender
from fedrec.shared.progress import task
from fedrec.shared.train.examples import evaluation_prompt, prompt_prefix, tokenize

#: The score given to items a ranking must skip (the user's own history): far below any real score.
NEG_INF = -1e9


def prepare_for_scoring(model: Recommender, catalog: Catalog, cfg: RunConfig) -> None:
    """With a trainable item tower, re-encode the catalog with the current adapter before ranking.

    Encoding the catalog costs about a minute for 17k items on 2 cores, so it is done once per adapter (per
    evaluation round in a worker), not once per evaluated user: the table is kept with a digest of the
    trainable weights and the catalog, and reused while both are unchanged.
    """
    if cfg.model.item_tower != "shared-lora":
        return  # the frozen table was computed once per process by build_model
    digest = hashlib.sha256(catalog_key(catalog).encode())
    for name, p in sorted(model.named_parameters()):
        if p.requires_grad:
            digest.update(name.encode() + p.detach().cpu().contiguous().numpy().tobytes())
    cached = getattr(model, "_scoring_table", None)  # (digest, the table it produced)
    if cached is not None and cached[0] == digest.hexdigest() and cached[1] is model.catalog:
        return
    model.catalog = encode_texts(model.backbone, model.encoder, catalog_texts(catalog),
                                 cfg.model.item_tokens).to(model.catalog.device)
    model._scoring_table = (digest.hexdigest(), model.catalog)


@torch.no_grad()
def score_prompts(model: Recommender, prompts: list[str], cfg: RunConfig, batch_size: int = 64) -> np.ndarray:
    """(len(prompts), N) scores over the whole catalog (a progress bar when there is more than one batch)."""
    model.eval()
    out = []
    with task("scoring histories", total=len(prompts) if len(prompts) > batch_size else None) as bar:
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start : start + batch_size]
            ids, mask = tokenize(model.backbone.tokenizer, chunk, cfg.model.history_tokens)
            dev = model.catalog.device
            out.append(model(ids.to(dev), mask.to(dev)).float().cpu().numpy())
            bar.advance(len(chunk))
    return np.concatenate(out) if out else np.zeros((0, model.catalog.shape[0]), dtype=np.float32)


def _as_split(history: UserHistory | UserSplit) -> UserSplit:
    """A history to score as the training part of a split (a split's held-out items never enter the prompt)."""
    if isinstance(history, UserSplit):
        return history
    return UserSplit(history.user_id, history.items, history.weights, None, None, history.timestamps)


def score_histories(model: Recommender, cfg: RunConfig, catalog: Catalog,
                    histories: Sequence[UserHistory | UserSplit],
                    released: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
    """(len(histories), N) scores over the whole catalog, one row per history: THE scoring entry point.

    A `UserHistory` is scored on all its items; a `UserSplit` on its training items only. Items already in a
    history are not removed here: callers that rank for a user exclude them (`fedrec.shared.metrics`).

    Without releases (`hybrid.releases` empty) the LoRA tower's logits, as trained. With releases the device's
    hybrid score (`fedrec.shared.hybrid.scorer`): the zero-shot text score, the released popularity prior,
    co-occurrence and text-cross scores, and the LoRA tower's scores when `hybrid.weight_lora` is not 0 (the
    language model runs only then). `released` defaults to the statistics loaded with the model
    (`model.released`, set by `load_trained`); `model` must hold the global adapter already.
    """
    splits = [_as_split(h) for h in histories]
    if not cfg.hybrid.kinds:
        prepare_for_scoring(model, catalog, cfg)
        return _lora_scores(model, cfg, catalog, splits)
    stats = released if released is not None else getattr(model, "released", None) or {}
    scorer = HybridScorer(cfg.hybrid.weights(), stats, len(catalog))
    lora = None
    if "lora" in scorer.active():
        prepare_for_scoring(model, catalog, cfg)
        lora = _lora_scores(model, cfg, catalog, splits)
    text = text_features(model.catalog.detach().cpu().numpy()) if {"text", "cross"} & set(scorer.active()) else None
    out = np.empty((len(splits), len(catalog)), dtype=np.float32)
    for row, split in enumerate(splits):
        out[row] = scorer.score(split.train_items, text, None if lora is None else lora[row])
    return out


def _lora_scores(model: Recommender, cfg: RunConfig, catalog: Catalog, splits: Sequence[UserSplit]) -> np.ndarray:
    """The language model's own scores (the LoRA tower vs the item table) for the training part of each split."""
    prefix = prompt_prefix(cfg)
    prompts = [evaluation_prompt(s, catalog, cfg.model.history_order, cfg.model.prompt_tags, prefix) for s in splits]
    return score_prompts(model, prompts, cfg)


def score_users(model: Recommender, splits: list[UserSplit], catalog: Catalog, cfg: RunConfig) -> np.ndarray:
    """The language model's own scores for the training part of each split, whatever `hybrid` says: what the
    adapter alone does (benchmarks, quantization and protocol checks). Ranking for users goes through
    `score_histories`."""
    prepare_for_scoring(model, catalog, cfg)
    return _lora_scores(model, cfg, catalog, splits)
