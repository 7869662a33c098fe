"""Int8 on-device inference (`fedrec.shared.model.quantize`): LoRA merged exactly, layers really int8, ranking kept.

The closeness bounds are loose structural ones (rank correlation, top-10 overlap on a 50-item catalog); the
measured NDCG@10 change on Last.fm-2K lives in simulations/results/edge.md.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from torch import nn
from typer.testing import CliRunner

from fedrec.shared.config import RunConfig
from fedrec.shared.model import quantize as q
from fedrec.shared.model.build import build_model
from fedrec.shared.model.recommender import Recommender, trainable_state
from fedrec.shared.model.scoring import score_users


def _with_random_adapter(model: Recommender, seed: int = 0) -> Recommender:
    """LoRA B starts at zero (merging would be a no-op and a broken merge would pass): give it real values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    return model


@pytest.fixture(scope="module")
def minilm_model(tiny_data) -> Recommender:
    """MiniLM (the real backbone) with a random non-zero LoRA adapter over the tiny catalog; tests copy it."""
    catalog, _ = tiny_data
    return _with_random_adapter(build_model(RunConfig(), catalog, cached=False))


def test_merge_lora_folds_the_adapter_into_the_base_weights(minilm_model, tiny_data):
    """After merging there are no LoRA layers, W = W0 + (alpha/r) B A, and the scores are unchanged."""
    catalog, splits = tiny_data
    cfg = RunConfig()
    model = copy.deepcopy(minilm_model)
    lora = model.encoder.base_model.model.encoder.layer[0].attention.self.query
    expected = lora.base_layer.weight + lora.scaling["default"] * lora.lora_B["default"].weight @ lora.lora_A[
        "default"].weight
    before = score_users(model, splits, catalog, cfg)
    q.merge_lora(model)
    assert not any("lora" in name for name, _ in model.encoder.named_modules())
    merged = model.encoder.encoder.layer[0].attention.self.query
    assert type(merged) is nn.Linear
    torch.testing.assert_close(merged.weight, expected)
    np.testing.assert_allclose(score_users(model, splits, catalog, cfg), before, atol=1e-3)


def test_int8_layers_are_int8_and_ranking_is_close(minilm_model, tiny_data):
    """Every backbone Linear becomes an int8 dynamic layer; head and item bias stay float; rankings stay close."""
    catalog, splits = tiny_data
    cfg = RunConfig()
    model = copy.deepcopy(minilm_model)
    ref = score_users(model, splits, catalog, cfg)
    summary = q.quantize_int8(model)
    dynamic = [m for m in model.encoder.modules() if isinstance(m, torch.ao.nn.quantized.dynamic.Linear)]
    assert len(dynamic) == summary.layers == 6 * 6 + 1  # 6 layers x (q, k, v, out, ffn in, ffn out) + pooler
    assert all(m.weight().dtype == torch.qint8 for m in dynamic)
    assert not [n for n, m in model.encoder.named_modules() if type(m) is nn.Linear]
    assert type(model.head) is nn.Linear and model.head.weight.dtype == torch.float32
    assert type(model.item_bias) is nn.Linear and model.item_bias.weight.dtype == torch.float32
    assert summary.int8_bytes * 4 == summary.float_bytes
    scores = score_users(model, splits, catalog, cfg)
    assert not np.allclose(scores, ref)  # it did change something
    rho = [spearmanr(a, b).statistic for a, b in zip(ref, scores, strict=True)]
    overlap = [len(set(np.argsort(-a)[:10]) & set(np.argsort(-b)[:10])) for a, b in zip(ref, scores, strict=True)]
    assert np.mean(rho) > 0.8, rho
    assert np.mean(overlap) >= 6, overlap


def test_quantizing_twice_or_without_an_engine_fails_clearly(tiny_llama_dir, tiny_data, monkeypatch):
    """A decoder backbone quantizes too; a second call, or a torch without a quantized engine, names the problem."""
    catalog, _ = tiny_data
    model = build_model(RunConfig.from_mapping({"model.name": str(tiny_llama_dir)}), catalog, cached=False)
    assert q.quantize_int8(model).layers == 2 * 7  # 2 layers x (q, k, v, o, gate, up, down)
    with pytest.raises(q.Int8Unsupported, match="no float nn.Linear"):
        q.quantize_int8(model)
    monkeypatch.setattr(q, "_supported_engines", lambda: ["none"])
    fresh = build_model(RunConfig.from_mapping({"model.name": str(tiny_llama_dir)}), catalog, cached=False)
    with pytest.raises(q.Int8Unsupported, match="no quantized CPU engine"):
        q.quantize_int8(fresh)
    assert any(type(m) is nn.Linear for m in fresh.encoder.modules())  # refused before touching the model


def test_recommend_int8_from_the_command_line(tiny_llama_dir, tiny_data, tmp_path):
    """`fedrec recommend --int8` on a run directory ranks with the quantized model and says so."""
    from fedrec.cli.main import app
    from fedrec.shared.run_dir import write_adapter, write_catalog, write_config

    catalog, _ = tiny_data
    cfg = RunConfig.from_mapping({"model.name": str(tiny_llama_dir),
                                  "data.source": "synthetic:users=20,items=50,seed=0"})
    run = tmp_path / "run"
    run.mkdir()
    write_config(run, cfg)
    write_catalog(run, catalog)
    write_adapter(run, trainable_state(_with_random_adapter(build_model(cfg, catalog, cached=False))), 1)
    history = tmp_path / "me.csv"
    history.write_text("user,item\n" + "".join(f"me,{catalog.item_ids[i]}\n" for i in (0, 5, 9)))
    result = CliRunner().invoke(app, ["recommend", "--run", str(run), "--history", str(history), "--top-k", "3",
                                      "--int8"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "int8: 14 Linear layers quantized" in result.output
    assert "because you played" in result.output
