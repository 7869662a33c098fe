"""From one user's training items to per-example (history prompt, target) pairs.

Each user's training records are spread over a *fixed* number of buckets by a hash of the item id, and each
non-empty bucket yields exactly one example per epoch: one of its items (drawn afresh each epoch) is the target,
the rest of the bucket is the history prompt. So every listening record belongs to exactly one example, and
adding or removing one record changes one example only. That is what lets on-device DP-SGD, which protects
examples, make a statement about single listening records. (Leave-one-out over the whole history would put each
record in every example of its user, and the per-example guarantee would say nothing about a record.)

Prompts list item names, largest weight first (most played, highest rated) or most recent first, and are cut to
a token budget. They begin with the data domain's prefix (`fedrec.shared.domain`: "Listening history:" for the
default, music).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from fedrec.shared.config import RunConfig
from fedrec.shared.data.split import UserSplit
from fedrec.shared.data.types import Catalog
from fedrec.shared.domain import DEFAULT_DOMAIN, DOMAINS, domain

PROMPT_PREFIX = DOMAINS[DEFAULT_DOMAIN].prompt_prefix  # "Listening history:"


def prompt_prefix(cfg: RunConfig) -> str:
    """The first words of every prompt of a run: its data domain's (`data.domain`)."""
    return domain(cfg.data.domain).prompt_prefix


def bucket_of(item_id: str, buckets: int) -> int:
    """Stable bucket of an item id (blake2b; independent of Python's per-process hash seed)."""
    digest = hashlib.blake2b(item_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little") % buckets


def ordered(items: np.ndarray, weights: np.ndarray, timestamps: np.ndarray | None, order: str) -> np.ndarray:
    """Items sorted for the prompt: most played first, or most recent first (ties keep source order)."""
    if order == "recent" and timestamps is not None:
        key = -timestamps
    else:
        key = -weights
    return items[np.argsort(key, kind="stable")]


def prompt_text(catalog: Catalog, items: np.ndarray, tags: int = 1, prefix: str = PROMPT_PREFIX) -> str:
    """`Listening history: A (rock), B (jazz), ...`: names plus each item's top public tags."""

    def one(i: int) -> str:
        t = catalog.tags[i][:tags]
        return f"{catalog.names[i]} ({', '.join(t)})" if t else catalog.names[i]

    return f"{prefix} " + ", ".join(one(int(i)) for i in items)


@dataclass
class ExampleBatch:
    """Tokenized examples. `history` lists each example's prompt items (-1 padded), masked out of the softmax."""

    input_ids: torch.Tensor  # (n, T) int64
    attention_mask: torch.Tensor  # (n, T) int64
    target: torch.Tensor  # (n,) int64 catalog index
    history: torch.Tensor  # (n, H) int64, -1 = padding

    def __len__(self) -> int:
        return int(self.target.shape[0])

    def to(self, device: torch.device | str) -> ExampleBatch:
        return ExampleBatch(*(t.to(device) for t in (self.input_ids, self.attention_mask, self.target, self.history)))


def draw_examples(
    split: UserSplit, catalog: Catalog, *, buckets: int, order: str, rng: np.random.Generator, tags: int = 1,
    prefix: str = PROMPT_PREFIX,
) -> tuple[list[str], list[int], list[np.ndarray]]:
    """One epoch's examples: (prompts, targets, history item arrays), one per non-empty bucket."""
    items = ordered(split.train_items, split.train_weights, split.train_timestamps, order)
    groups: dict[int, list[int]] = {}
    for i in items:
        groups.setdefault(bucket_of(catalog.item_ids[int(i)], buckets), []).append(int(i))
    prompts, targets, histories = [], [], []
    for b in sorted(groups):
        members = groups[b]
        t = int(rng.integers(len(members)))
        hist = np.asarray(members[:t] + members[t + 1 :], dtype=np.int64)
        prompts.append(prompt_text(catalog, hist, tags, prefix))
        targets.append(members[t])
        histories.append(hist)
    return prompts, targets, histories


Epoch = tuple[list[str], list[int], list[np.ndarray]]
"""One epoch of one user's examples: (prompts, targets, history items of each prompt)."""


def draw_epochs(split: UserSplit, catalog: Catalog, cfg: RunConfig, rng: np.random.Generator,
                epochs: int | None = None) -> list[Epoch]:
    """`epochs` (default `train.local_epochs`) epochs of one user's examples, targets redrawn every epoch."""
    return [draw_examples(split, catalog, buckets=cfg.train.examples_per_user, order=cfg.model.history_order,
                          rng=rng, tags=cfg.model.prompt_tags, prefix=prompt_prefix(cfg))
            for _ in range(cfg.train.local_epochs if epochs is None else epochs)]


def tokenize(tokenizer, prompts: list[str], max_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    tok = tokenizer(prompts, padding=True, truncation=True, max_length=max_tokens, return_tensors="pt")
    return tok["input_ids"], tok["attention_mask"]


def make_batch(
    tokenizer, prompts: list[str], targets: list[int], histories: list[np.ndarray], max_tokens: int
) -> ExampleBatch:
    ids, mask = tokenize(tokenizer, prompts, max_tokens)
    width = max((len(h) for h in histories), default=0) or 1
    hist = torch.full((len(histories), width), -1, dtype=torch.long)
    for row, h in enumerate(histories):
        hist[row, : len(h)] = torch.as_tensor(h, dtype=torch.long)
    return ExampleBatch(ids, mask, torch.as_tensor(targets, dtype=torch.long), hist)


def batch_of(epoch: Epoch, sel: Sequence[int], tokenizer, max_tokens: int, device: torch.device | str
             ) -> ExampleBatch:
    """The examples `sel` of an epoch as one tokenized batch on `device`."""
    prompts, targets, hists = epoch
    return make_batch(tokenizer, [prompts[i] for i in sel], [targets[i] for i in sel], [hists[i] for i in sel],
                      max_tokens).to(device)


def evaluation_prompt(split: UserSplit, catalog: Catalog, order: str, tags: int = 1,
                      prefix: str = PROMPT_PREFIX) -> str:
    """The prompt a user is scored with: all training items, ordered, cut later to the token budget."""
    items = ordered(split.train_items, split.train_weights, split.train_timestamps, order)
    return prompt_text(catalog, items, tags, prefix)
