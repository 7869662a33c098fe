"""Build the recommender once per process, train it on one user's examples, score users against the catalog.

The same functions serve a federated client, the centralized fine-tuning baseline and `fedrec recommend`.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from fedrec.shared.audit import RecordCanary, canary_examples
from fedrec.shared.backbone import attach_lora, load_backbone
from fedrec.shared.config import RunConfig
from fedrec.shared.data.split import UserSplit
from fedrec.shared.data.types import Catalog
from fedrec.shared.examples import draw_examples, evaluation_prompt, make_batch, tokenize
from fedrec.shared.model import (
    Recommender,
    catalog_embeddings,
    catalog_texts,
    encode_texts,
    load_trainable_state,
    trainable_state,
)

NEG_INF = -1e9

_MODEL_CACHE: dict[str, Recommender] = {}


_CATALOG_KEYS: dict[int, tuple[Catalog, str]] = {}


def _catalog_key(catalog: Catalog) -> str:
    """SHA-256 of the catalog's texts, computed once per catalog object (hashing 17k texts took 31 ms/message).

    The memo holds the catalog itself, so an id is never reused by another object while its entry exists.
    """
    hit = _CATALOG_KEYS.get(id(catalog))
    if hit is not None and hit[0] is catalog:
        return hit[1]
    h = hashlib.sha256()
    for t in catalog_texts(catalog):
        h.update(t.encode("utf-8", "surrogatepass") + b"\0")
    if len(_CATALOG_KEYS) > 16:
        _CATALOG_KEYS.clear()
    _CATALOG_KEYS[id(catalog)] = (catalog, h.hexdigest())
    return _CATALOG_KEYS[id(catalog)][1]


def build_model(cfg: RunConfig, catalog: Catalog, *, cached: bool = True) -> Recommender:
    """The recommender for `cfg` over `catalog`: backbone, cached catalog table, LoRA, head, item bias.

    With `cached`, one model per (settings, catalog) is kept per process and reused for every client message
    the process serves; callers load the global adapter state into it before use, so nothing is loaded twice.
    """
    m = cfg.model
    key = "|".join(str(x) for x in (m.name, m.lora_rank, m.lora_alpha, m.lora_targets, m.head, m.item_bias,
                                    m.temperature, m.item_tokens, _catalog_key(catalog)))
    if cached and key in _MODEL_CACHE:
        return _MODEL_CACHE[key]
    torch.manual_seed(0)  # LoRA A init must be identical everywhere: it is the starting global state
    backbone = load_backbone(cfg.model.name, device=os.environ.get("FEDREC_DEVICE", "cpu"))  # runtime-only setting
    table = catalog_embeddings(backbone, catalog, cfg.model.item_tokens)  # base model, before LoRA is attached
    encoder = attach_lora(backbone, cfg.model.lora_rank, cfg.model.lora_alpha, cfg.model.lora_target_list)
    model = Recommender(backbone, encoder, table, head=cfg.model.head, item_bias=cfg.model.item_bias,
                        temperature=cfg.model.temperature).to(next(backbone.model.parameters()).device)
    # The seeded starting adapter, kept apart: clients train the cached object in place, so a later run in the
    # same process must start from this copy, never from whatever the model holds now (`initial_state`).
    model._initial_state = {k: v.detach().cpu().numpy().copy() for k, v in trainable_state(model).items()}
    if cached:
        _MODEL_CACHE[key] = model
    return model


def initial_state(model: Recommender) -> dict[str, np.ndarray]:
    """A copy of the seeded starting adapter of a model made by `build_model` (the same in every process)."""
    return {k: v.copy() for k, v in model._initial_state.items()}


def make_optimizer(model: Recommender, cfg: RunConfig) -> torch.optim.Optimizer:
    """Adam on LoRA and head; the item bias in its own group that behaves like plain SGD.

    Adam normalises each coordinate's step, so every one of the N item biases would move by the full learning
    rate on every step, whether its gradient was 1/B (a target) or 1e-6 (an item nobody played). With eps = 1
    (far above any bias gradient, |g| <= 1) Adam's step is lr * m / (sqrt(v) + 1) ~= lr * g: SGD, whose bias
    updates average across clients into (scaled) log-popularity. One optimizer keeps DP-SGD wrapping simple.
    """
    bias = [model.item_bias.weight] if model.item_bias is not None else []
    rest = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("item_bias")]
    groups = [{"params": rest, "lr": cfg.train.learning_rate}]
    if bias:
        groups.append({"params": bias, "lr": cfg.train.bias_learning_rate, "eps": 1.0})
    return torch.optim.Adam(groups)


def example_loss(model: Recommender, batch_ids, batch_mask, target, history) -> torch.Tensor:
    """Mean over the batch of per-example cross-entropy over the full catalog, prompt items masked out.

    Example i's loss depends only on its own prompt, target and history items, and the public catalog.
    """
    logits = model(batch_ids, batch_mask)  # (B, N)
    # Shift by one so the -1 padding lands in a spare column 0 that is dropped. (Scattering `history >= 0` at
    # `history.clamp(min=0)` let a padding slot's False overwrite a real item 0's True: item 0 went unmasked.)
    b, n = logits.shape
    mask = torch.zeros((b, n + 1), dtype=torch.bool, device=logits.device).scatter_(1, history + 1, True)[:, 1:]
    logits = logits.masked_fill(mask, NEG_INF)
    return F.cross_entropy(logits, target)


def candidate_loss(model: Recommender, tokenizer, catalog: Catalog, batch, rng, cfg: RunConfig) -> torch.Tensor:
    """Trainable-item-tower variant: target vs `negatives` catalog items drawn per example (none of its own)."""
    texts_all = catalog_texts(catalog)
    cands = []
    for target, hist in zip(batch.target.tolist(), batch.history.tolist(), strict=True):
        own = set(hist) | {target}
        negs: list[int] = []
        while len(negs) < cfg.train.negatives:
            j = int(rng.integers(len(catalog)))
            if j not in own and j not in negs:
                negs.append(j)
        cands.append([target] + negs)
    k = cfg.train.negatives + 1
    flat = [texts_all[j] for row in cands for j in row]
    ids, mask = (t.to(batch.input_ids.device) for t in tokenize(tokenizer, flat, cfg.model.item_tokens))
    ids = ids.view(len(cands), k, -1)  # (B, K, L): encoded slot by slot in candidate_logits
    mask = mask.view(len(cands), k, -1)
    logits = model.candidate_logits(batch.input_ids, batch.attention_mask, ids, mask)
    return F.cross_entropy(logits, torch.zeros(len(cands), dtype=torch.long, device=logits.device))


@dataclass
class TrainStats:
    examples: int
    steps: int
    loss: float
    seconds: float
    tokens: int  # prompt tokens that needed gradients


def train_examples(
    model: Recommender, cfg: RunConfig, catalog: Catalog, epochs: list[tuple[list[str], list[int], list[np.ndarray]]],
    rng: np.random.Generator,
) -> TrainStats:
    """Minibatch training over pre-drawn epochs of examples (non-private; DP-SGD wraps this later)."""
    model.train()
    opt = make_optimizer(model, cfg)
    tokenizer = model.backbone.tokenizer
    t0, steps, total, n_loss, n_examples, tokens = time.perf_counter(), 0, 0.0, 0, 0, 0
    for prompts, targets, hists in epochs:
        order = rng.permutation(len(prompts))
        for start in range(0, len(order), cfg.train.batch_size):
            sel = order[start : start + cfg.train.batch_size]
            batch = make_batch(tokenizer, [prompts[i] for i in sel], [targets[i] for i in sel],
                               [hists[i] for i in sel], cfg.model.history_tokens).to(model.catalog.device)
            opt.zero_grad(set_to_none=True)
            if cfg.model.item_tower == "frozen":
                loss = example_loss(model, batch.input_ids, batch.attention_mask, batch.target, batch.history)
            else:
                loss = candidate_loss(model, tokenizer, catalog, batch, rng, cfg)
            loss.backward()
            opt.step()
            steps += 1
            total += float(loss.item()) * len(batch)
            n_loss += len(batch)
            tokens += int(batch.attention_mask.sum())
        n_examples += len(prompts)
    model.eval()
    return TrainStats(n_examples, steps, total / max(n_loss, 1), time.perf_counter() - t0, tokens)


def train_local(
    model: Recommender, split: UserSplit, catalog: Catalog, cfg: RunConfig, *, seed: int,
    canaries: Sequence[RecordCanary] = (),
) -> TrainStats:
    """`local_epochs` passes over one user's bucketed examples: what a client does in a round.

    `canaries` (audit canaries this device hosts, `fedrec.shared.audit`) join every epoch as extra examples; they
    are not counted in `examples`.
    """
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    epochs = [draw_examples(split, catalog, buckets=cfg.train.examples_per_user, order=cfg.model.history_order, rng=rng,
                            tags=cfg.model.prompt_tags) for _ in range(cfg.train.local_epochs)]
    if canaries:
        extra = canary_examples(canaries, catalog, cfg)
        epochs = [(p + extra[0], t + extra[1], h + extra[2]) for p, t, h in epochs]
    stats = train_examples(model, cfg, catalog, epochs, rng)
    stats.examples -= len(canaries) * len(epochs)
    return stats


def train_central(
    model: Recommender, splits: list[UserSplit], catalog: Catalog, cfg: RunConfig, *, epochs: int, seed: int
) -> TrainStats:
    """The centralized baseline: the same examples, pooled over all users, shuffled across users."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    pooled = []
    for _ in range(epochs):
        prompts, targets, hists = [], [], []
        for split in splits:
            p, t, h = draw_examples(split, catalog, buckets=cfg.train.examples_per_user, order=cfg.model.history_order,
                                    rng=rng, tags=cfg.model.prompt_tags)
            prompts += p
            targets += t
            hists += h
        pooled.append((prompts, targets, hists))
    return train_examples(model, cfg, catalog, pooled, rng)


def prepare_for_scoring(model: Recommender, catalog: Catalog, cfg: RunConfig) -> None:
    """With a trainable item tower, re-encode the catalog with the current adapter before ranking.

    Encoding the catalog costs about a minute for 17k items on 2 cores, so it is done once per adapter (per
    evaluation round in a worker), not once per evaluated user: the table is kept with a digest of the
    trainable weights and the catalog, and reused while both are unchanged.
    """
    if cfg.model.item_tower != "shared-lora":
        return  # the frozen table was computed once per process by build_model
    digest = hashlib.sha256(_catalog_key(catalog).encode())
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
    """(len(prompts), N) scores over the whole catalog."""
    model.eval()
    out = []
    for start in range(0, len(prompts), batch_size):
        ids, mask = tokenize(model.backbone.tokenizer, prompts[start : start + batch_size], cfg.model.history_tokens)
        dev = model.catalog.device
        out.append(model(ids.to(dev), mask.to(dev)).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.catalog.shape[0]), dtype=np.float32)


def score_users(model: Recommender, splits: list[UserSplit], catalog: Catalog, cfg: RunConfig) -> np.ndarray:
    prompts = [evaluation_prompt(s, catalog, cfg.model.history_order, cfg.model.prompt_tags) for s in splits]
    return score_prompts(model, prompts, cfg)


def set_global_state(model: Recommender, state: dict[str, np.ndarray]) -> None:
    load_trainable_state(model, state)
