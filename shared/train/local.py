"""Local training on one device (and its centralized counterpart): optimiser, per-example losses, the step loop.

The same functions serve a federated client (`train_local`), the centralized fine-tuning baseline
(`train_central`) and, through `step_batch` and `LossMeter`, on-device DP-SGD (`fedrec.shared.train.dp_sgd`), whose
loop differs only in how a step's examples are chosen (Poisson slots) and in the optimiser (Opacus' DPOptimizer).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from fedrec.shared.config import RunConfig
from fedrec.shared.data.split import UserSplit
from fedrec.shared.data.types import Catalog
from fedrec.shared.model.catalog_table import catalog_texts
from fedrec.shared.model.recommender import Recommender
from fedrec.shared.model.scoring import NEG_INF
from fedrec.shared.privacy.canaries import RecordCanary, canary_examples
from fedrec.shared.train.examples import Epoch, ExampleBatch, batch_of, draw_epochs, tokenize


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


class LossMeter:
    """Running totals of a round: steps, example-weighted loss, prompt tokens that needed gradients."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.steps = 0
        self.total = 0.0
        self.n = 0
        self.tokens = 0

    def add(self, loss: torch.Tensor, batch: ExampleBatch) -> None:
        self.total += float(loss.item()) * len(batch)
        self.n += len(batch)
        self.tokens += int(batch.attention_mask.sum())

    def stats(self, examples: int) -> TrainStats:
        return TrainStats(examples, self.steps, self.total / max(self.n, 1), time.perf_counter() - self.t0, self.tokens)


def step_batch(model: Recommender, batch: ExampleBatch, cfg: RunConfig, catalog: Catalog,
               rng: np.random.Generator) -> torch.Tensor:
    """The loss of one batch under the configured item tower (the caller runs backward and the optimiser)."""
    if cfg.model.item_tower == "frozen":
        return example_loss(model, batch.input_ids, batch.attention_mask, batch.target, batch.history)
    return candidate_loss(model, model.backbone.tokenizer, catalog, batch, rng, cfg)


def train_examples(model: Recommender, cfg: RunConfig, catalog: Catalog, epochs: list[Epoch],
                   rng: np.random.Generator) -> TrainStats:
    """Minibatch training over pre-drawn epochs of examples (non-private; `dp_sgd` is the private loop)."""
    model.train()
    opt = make_optimizer(model, cfg)
    meter = LossMeter()
    for epoch in epochs:
        order = rng.permutation(len(epoch[0]))
        for start in range(0, len(order), cfg.train.batch_size):
            batch = batch_of(epoch, order[start : start + cfg.train.batch_size], model.backbone.tokenizer,
                             cfg.model.history_tokens, model.catalog.device)
            opt.zero_grad(set_to_none=True)
            loss = step_batch(model, batch, cfg, catalog, rng)
            loss.backward()
            opt.step()
            meter.steps += 1
            meter.add(loss, batch)
    model.eval()
    return meter.stats(sum(len(e[0]) for e in epochs))


def train_local(
    model: Recommender, split: UserSplit, catalog: Catalog, cfg: RunConfig, *, seed: int,
    canaries: Sequence[RecordCanary] = (),
) -> TrainStats:
    """`train.local_epochs` passes over one user's bucketed examples: what a client does in a round.

    `canaries` (audit canaries this device hosts, `fedrec.shared.privacy.canaries`) join every epoch as extra
    examples; they are not counted in `examples`.
    """
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    epochs = draw_epochs(split, catalog, cfg, rng)
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
    pooled: list[Epoch] = []
    for _ in range(epochs):
        prompts, targets, hists = [], [], []
        for split in splits:
            p, t, h = draw_epochs(split, catalog, cfg, rng, epochs=1)[0]
            prompts += p
            targets += t
            hists += h
        pooled.append((prompts, targets, hists))
    return train_examples(model, cfg, catalog, pooled, rng)
