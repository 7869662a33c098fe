"""Backbone loading, LoRA target discovery and pooling, for the bundled encoder and a tiny decoder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fedrec.shared.model.backbone import Backbone, find_lora_targets, load_backbone, resolve_model_path

TEXTS = ["Listening history: Alpha (rock), Beta (jazz), Gamma (pop), Delta (metal)", "Listening history: Alpha", "a b"]


@pytest.fixture(scope="module")
def minilm() -> Backbone:
    return load_backbone("minilm")


@pytest.fixture(scope="module")
def llama(tiny_llama_dir: Path) -> Backbone:
    return load_backbone(str(tiny_llama_dir))


def _tokenize(bb: Backbone, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    tok = bb.tokenizer(texts, padding=True, return_tensors="pt")
    return tok["input_ids"], tok["attention_mask"]


def test_minilm_loads_as_frozen_encoder(minilm: Backbone) -> None:
    """The bundled MiniLM: hidden 384, an encoder, eval mode, every base weight frozen."""
    # Prepare / Execute: the fixture loads it.
    # Assert
    assert minilm.hidden_size == 384
    assert minilm.is_decoder is False
    assert not minilm.model.training
    assert not any(p.requires_grad for p in minilm.model.parameters())
    assert minilm.tokenizer.padding_side == "right"


def test_minilm_lora_targets_are_query_value(minilm: Backbone) -> None:
    """Automatic LoRA targets for BERT-style MiniLM are the query and value projections."""
    # Execute / Assert
    assert find_lora_targets(minilm.model) == ["query", "value"]


def test_lora_target_override_checked_against_model(minilm: Backbone) -> None:
    """An explicit override is returned as given, and a typo fails with a ValueError naming the module."""
    # Execute / Assert
    assert find_lora_targets(minilm.model, ["query", "key", "value"]) == ["query", "key", "value"]
    with pytest.raises(ValueError, match="valeu"):
        find_lora_targets(minilm.model, ["query", "valeu"])


def test_resolve_model_path_rejects_non_model_dir(tmp_path: Path) -> None:
    """A directory without config.json is refused with FileNotFoundError saying what is missing."""
    # Prepare
    (tmp_path / "weights.bin").write_bytes(b"not a model")
    # Execute / Assert
    with pytest.raises(FileNotFoundError, match=r"not a local Hugging Face model directory \(no config\.json"):
        resolve_model_path(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_backbone(str(tmp_path / "does-not-exist"))


def test_resolve_model_path_default_is_bundled_minilm() -> None:
    """`minilm` and the empty string both resolve to the bundled model directory."""
    # Execute
    path = resolve_model_path("minilm")
    # Assert
    assert resolve_model_path("") == path
    assert (path / "config.json").is_file()


def test_encoder_mean_pools_over_real_tokens_only(minilm: Backbone) -> None:
    """Encoder pooling is the mean of the hidden states at real (unpadded) positions."""
    # Prepare
    ids, mask = _tokenize(minilm, TEXTS)
    assert (mask == 0).any(), "the batch must contain padding for this test to mean anything"
    with torch.no_grad():
        hidden = minilm.model(input_ids=ids, attention_mask=mask).last_hidden_state
    # Execute
    pooled = minilm.pool(hidden, mask)
    # Assert
    for i in range(len(TEXTS)):
        n = int(mask[i].sum())
        torch.testing.assert_close(pooled[i], hidden[i, :n].mean(dim=0))


def test_tiny_llama_loads_as_decoder(llama: Backbone) -> None:
    """A local Llama directory loads as a decoder with hidden 32, a pad token and right padding."""
    # Assert
    assert llama.is_decoder is True
    assert llama.hidden_size == 32
    assert llama.tokenizer.pad_token is not None
    assert llama.tokenizer.padding_side == "right"
    assert find_lora_targets(llama.model) == ["q_proj", "v_proj"]


def test_decoder_pools_last_real_token_under_right_padding(llama: Backbone) -> None:
    """Decoder pooling picks the hidden state at the last real token, and matches the unpadded prompt alone."""
    # Prepare
    ids, mask = _tokenize(llama, TEXTS)
    lengths = [int(m.sum()) for m in mask]
    assert len(set(lengths)) > 1
    assert all(bool(m[:n].all()) and not m[n:].any() for m, n in zip(mask, lengths, strict=True))  # right padding
    with torch.no_grad():
        hidden = llama.model(input_ids=ids, attention_mask=mask).last_hidden_state
    # Execute
    pooled = llama.pool(hidden, mask)
    # Assert
    for i, n in enumerate(lengths):
        assert torch.equal(pooled[i], hidden[i, n - 1])
        alone_ids, alone_mask = _tokenize(llama, [TEXTS[i]])
        with torch.no_grad():
            alone = llama.model(input_ids=alone_ids, attention_mask=alone_mask).last_hidden_state
        torch.testing.assert_close(pooled[i], llama.pool(alone, alone_mask)[0], atol=1e-5, rtol=1e-5)
