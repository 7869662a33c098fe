"""The two-tower recommender: what trains, what stays frozen, and that every loss is per example."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fedrec.shared.config import RunConfig
from fedrec.shared.data.split import UserSplit
from fedrec.shared.data.types import Catalog
from fedrec.shared.model.backbone import load_backbone
from fedrec.shared.model.build import build_model
from fedrec.shared.model.catalog_table import catalog_texts
from fedrec.shared.model.recommender import Recommender, load_trainable_state, trainable_state
from fedrec.shared.model.scoring import NEG_INF, prepare_for_scoring
from fedrec.shared.train.examples import draw_examples, make_batch, prompt_text, tokenize
from fedrec.shared.train.local import example_loss, train_local

TRAINABLE_NAME = re.compile(r"(\.lora_[AB]\.default\.weight$)|(^head\.weight$)|(^item_bias\.weight$)")
BASE_PREFIX = "encoder.base_model.model."


def _cfg(model: str, changes: dict | None = None) -> RunConfig:
    return RunConfig.from_mapping({"model.name": model, **(changes or {})})


def _model_name(which: str, tiny_llama_dir: Path) -> str:
    return "minilm" if which == "minilm" else str(tiny_llama_dir)


def _busy_user(splits: list[UserSplit]) -> UserSplit:
    """A user whose history fills several buckets, so one training step sees a real batch."""
    return max(splits, key=lambda s: len(s.train_items))


def _perturbed(model: Recommender, seed: int = 0) -> Recommender:
    """Give every trainable tensor a random non-zero value so LoRA, head and bias all affect the output."""
    rng = np.random.default_rng(seed)
    state = {k: v.numpy() + 0.05 * rng.standard_normal(v.shape).astype(np.float32)
             for k, v in trainable_state(model).items()}
    load_trainable_state(model, state)
    model.eval()
    return model


def _batch(model: Recommender, catalog: Catalog, splits: list[UserSplit], n: int = 4):
    """One example from each of `n` users: prompts of different lengths, so the batch is padded."""
    prompts, targets, hists = [], [], []
    for s in splits[:n]:
        p, t, h = draw_examples(s, catalog, buckets=2, order="weight", rng=np.random.default_rng(0))
        prompts.append(p[0])
        targets.append(t[0])
        hists.append(h[0])
    batch = make_batch(model.backbone.tokenizer, prompts, targets, hists, 64)
    assert (batch.attention_mask == 0).any(), "the batch must contain padding"
    return batch, prompts


def _masked_ce(logits: torch.Tensor, target: torch.Tensor, histories: list[list[int]]) -> torch.Tensor:
    """Per-row cross-entropy with each row's history items removed from the softmax, written out by hand."""
    logits = logits.clone()
    for row, hist in enumerate(histories):
        for item in hist:
            if item >= 0:
                logits[row, item] = NEG_INF
    return F.cross_entropy(logits, target, reduction="none")


def _assert_one_step_trains_adapter_only(model: Recommender, split: UserSplit, catalog: Catalog, cfg: RunConfig):
    """Shared body: one train_local step changes LoRA B/head/bias and leaves every frozen tensor bit-identical."""
    # Prepare
    fresh_base = load_backbone(cfg.model.name).model.state_dict()
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    catalog_before = model.catalog.clone()
    params = dict(model.named_parameters())
    trainable = {n for n, p in params.items() if p.requires_grad}
    # Execute
    stats = train_local(model, split, catalog, cfg, seed=0)
    # Assert
    assert stats.steps == 1, "the gradients left on the parameters must be those of the one step taken"
    after = model.state_dict()
    frozen = [k for k in before if k not in trainable]
    for k in frozen:
        assert torch.equal(before[k], after[k]), f"frozen tensor {k} changed"
    assert torch.equal(model.catalog, catalog_before)
    # The frozen tensors are exactly the on-disk base model, name for name.
    base = {k.removeprefix(BASE_PREFIX).replace(".base_layer", ""): after[k] for k in frozen}
    assert base.keys() == fresh_base.keys()
    for k, v in fresh_base.items():
        assert torch.equal(base[k], v), f"base weight {k} differs from the model on disk"
    for n in trainable:
        g = params[n].grad
        if g is not None and bool(g.abs().sum() > 0):
            assert not torch.equal(before[n], after[n]), f"{n} received gradient but did not change"
    lora_b = [n for n in trainable if ".lora_B." in n]
    assert lora_b
    for n in lora_b:
        assert not torch.equal(before[n], after[n]), f"{n} did not change"


def test_one_step_trains_adapter_and_keeps_minilm_base_bit_identical(tiny_data) -> None:
    """MiniLM: a train_local step moves LoRA B, head and bias; every frozen base weight stays bit-identical."""
    catalog, splits = tiny_data
    cfg = _cfg("minilm")
    model = build_model(cfg, catalog, cached=False)
    _assert_one_step_trains_adapter_only(model, _busy_user(splits), catalog, cfg)


@pytest.mark.parametrize("item_tower", ["frozen", "shared-lora"])
def test_one_step_trains_adapter_and_keeps_llama_base_bit_identical(tiny_data, tiny_llama_dir, item_tower) -> None:
    """Tiny Llama decoder, both item towers: one step changes LoRA B, frozen weights stay bit-identical."""
    catalog, splits = tiny_data
    cfg = _cfg(str(tiny_llama_dir), {"model.item_tower": item_tower, "train.negatives": 3})
    model = build_model(cfg, catalog, cached=False)
    _assert_one_step_trains_adapter_only(model, _busy_user(splits), catalog, cfg)


def test_trainable_state_is_lora_head_bias_float32(tiny_data) -> None:
    """The adapter state holds only lora_A/B, head and item_bias tensors, all float32, LoRA on query/value."""
    # Prepare
    catalog, _ = tiny_data
    model = build_model(_cfg("minilm"), catalog, cached=False)
    # Execute
    state = trainable_state(model)
    # Assert
    bad = [k for k in state if not TRAINABLE_NAME.search(k)]
    assert not bad, f"unexpected trainable tensors: {bad}"
    assert all(v.dtype == torch.float32 for v in state.values())
    lora = [k for k in state if ".lora_" in k]
    assert len(lora) == 6 * 2 * 2  # 6 layers x (query, value) x (A, B)
    assert all(re.search(r"\.(query|value)\.lora_", k) for k in lora)
    assert state["head.weight"].shape == (384, 384)
    assert torch.equal(state["head.weight"], torch.eye(384))
    assert state["item_bias.weight"].shape == (len(catalog), 1)
    assert not state["item_bias.weight"].any()


def test_trainable_state_without_head_and_bias(tiny_data, tiny_llama_dir) -> None:
    """head=False, item_bias=False leaves LoRA tensors only (q_proj/v_proj on the decoder)."""
    # Prepare
    catalog, _ = tiny_data
    cfg = _cfg(str(tiny_llama_dir), {"model.head": False, "model.item_bias": False})
    model = build_model(cfg, catalog, cached=False)
    # Execute
    state = trainable_state(model)
    # Assert
    assert state and all(".lora_" in k for k in state)
    assert {re.search(r"\.(q_proj|v_proj)\.lora_", k).group(1) for k in state} == {"q_proj", "v_proj"}


@pytest.fixture(scope="module", params=["minilm", "llama"])
def eval_model(request, tiny_data, tiny_llama_dir) -> Recommender:
    """A model with random non-zero adapter state, in eval mode (no dropout)."""
    catalog, _ = tiny_data
    return _perturbed(build_model(_cfg(_model_name(request.param, tiny_llama_dir)), catalog, cached=False))


@torch.no_grad()
def test_example_loss_is_per_example(eval_model, tiny_data) -> None:
    """Example i's loss in a padded batch equals its loss alone, and the batch loss is the mean of those."""
    # Prepare
    catalog, splits = tiny_data
    batch, prompts = _batch(eval_model, catalog, splits)
    hists = batch.history.tolist()
    # Execute
    logits = eval_model(batch.input_ids, batch.attention_mask)
    per_row = _masked_ce(logits, batch.target, hists)
    batch_loss = example_loss(eval_model, batch.input_ids, batch.attention_mask, batch.target, batch.history)
    # Assert
    torch.testing.assert_close(batch_loss, per_row.mean(), atol=1e-5, rtol=1e-5)
    for i in range(len(batch)):
        sl = slice(i, i + 1)
        alone = example_loss(eval_model, batch.input_ids[sl], batch.attention_mask[sl], batch.target[sl],
                             batch.history[sl])
        torch.testing.assert_close(alone, per_row[i], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(eval_model(batch.input_ids[sl], batch.attention_mask[sl])[0], logits[i],
                                   atol=1e-5, rtol=1e-5)
        # Re-tokenized alone (no padding at all): the prompt's scores do not depend on its batch-mates.
        ids, mask = tokenize(eval_model.backbone.tokenizer, [prompts[i]], 64)
        torch.testing.assert_close(eval_model(ids, mask)[0], logits[i], atol=1e-4, rtol=1e-5)


@torch.no_grad()
def test_example_loss_masks_every_history_item_including_item_zero(eval_model, tiny_data) -> None:
    """Prompt items, catalog index 0 included, are out of the softmax even in a row shorter than the batch's widest."""
    # Prepare: row 0's history holds item 0 and is padded with -1 up to row 1's width.
    catalog, _ = tiny_data
    histories = [np.array([0, 3]), np.array([1, 2, 4, 5, 6])]
    targets = [7, 8]
    prompts = [prompt_text(catalog, h) for h in histories]
    batch = make_batch(eval_model.backbone.tokenizer, prompts, targets, histories, 64)
    assert batch.history[0].tolist() == [0, 3, -1, -1, -1]
    # Execute
    got = example_loss(eval_model, batch.input_ids, batch.attention_mask, batch.target, batch.history)
    # Assert
    logits = eval_model(batch.input_ids, batch.attention_mask)
    want = _masked_ce(logits, batch.target, [h.tolist() for h in histories]).mean()
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_candidate_logits_are_per_example(eval_model, tiny_data) -> None:
    """Shared-LoRA item tower: row i of a batch's candidate logits equals row i computed alone."""
    # Prepare
    catalog, splits = tiny_data
    batch, _ = _batch(eval_model, catalog, splits, n=3)
    texts = catalog_texts(catalog)
    k = 4
    cands = [[(t + j * 7) % len(catalog) for j in range(k)] for t in batch.target.tolist()]
    ids, mask = tokenize(eval_model.backbone.tokenizer, [texts[j] for row in cands for j in row], 32)
    ids, mask = ids.view(len(cands), k, -1), mask.view(len(cands), k, -1)
    assert (mask == 0).any(), "candidate texts must differ in length"
    # Execute
    logits = eval_model.candidate_logits(batch.input_ids, batch.attention_mask, ids, mask)
    # Assert
    assert logits.shape == (len(cands), k)
    per_row = F.cross_entropy(logits, torch.zeros(len(cands), dtype=torch.long), reduction="none")
    for i in range(len(cands)):
        sl = slice(i, i + 1)
        alone = eval_model.candidate_logits(batch.input_ids[sl], batch.attention_mask[sl], ids[sl], mask[sl])
        torch.testing.assert_close(alone[0], logits[i], atol=1e-5, rtol=1e-5)
        alone_ce = F.cross_entropy(alone, torch.zeros(1, dtype=torch.long))
        torch.testing.assert_close(alone_ce, per_row[i], atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_shared_lora_scoring_table_matches_training_item_tower(eval_model, tiny_data) -> None:
    """prepare_for_scoring (shared-lora) re-encodes the catalog exactly as encode_items does during training."""
    # Prepare
    catalog, _ = tiny_data
    cfg = RunConfig.from_mapping({"model.item_tower": "shared-lora"})
    frozen_table = eval_model.catalog.clone()
    texts = catalog_texts(catalog)
    try:
        # Execute
        prepare_for_scoring(eval_model, catalog, cfg)
        table = eval_model.catalog.clone()
    finally:
        eval_model.catalog = frozen_table  # the fixture is shared with the frozen-table tests
    # Assert
    assert table.shape == frozen_table.shape
    assert not torch.allclose(table, frozen_table), "a non-zero adapter must change the item embeddings"
    for j in (0, 17, len(catalog) - 1):
        ids, mask = tokenize(eval_model.backbone.tokenizer, [texts[j]], cfg.model.item_tokens)
        torch.testing.assert_close(table[j], eval_model.encode_items(ids, mask)[0], atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_shared_lora_catalog_is_encoded_once_per_adapter(eval_model, tiny_data, monkeypatch) -> None:
    """Evaluating many users with one global adapter encodes the catalog once, and again only when it changes."""
    # Prepare
    import fedrec.shared.model.scoring as scoring

    catalog, _ = tiny_data
    cfg = RunConfig.from_mapping({"model.item_tower": "shared-lora"})
    frozen_table = eval_model.catalog.clone()
    calls = []
    real = scoring.encode_texts
    monkeypatch.setattr(scoring, "encode_texts", lambda *a, **k: calls.append(1) or real(*a, **k))
    lora = next(p for n, p in eval_model.named_parameters() if p.requires_grad and "lora_B" in n)
    try:
        # Execute: three users with the same adapter, then a changed adapter
        for _ in range(3):
            prepare_for_scoring(eval_model, catalog, cfg)
        once = len(calls)
        lora.add_(0.01)
        prepare_for_scoring(eval_model, catalog, cfg)
        lora.sub_(0.01)
    finally:
        eval_model.catalog = frozen_table
    # Assert
    assert once == 1
    assert len(calls) == 2
