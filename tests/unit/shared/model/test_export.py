"""The PEFT export: plain PEFT loads it and reproduces fedrec's scores; every other tensor travels generically."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fedrec.shared.config import RunConfig
from fedrec.shared.data.synthetic import make_synthetic
from fedrec.shared.model.build import build_model, set_global_state
from fedrec.shared.model.export import (
    EMBEDDINGS,
    OTHER_STATE,
    PEFT_CONFIG,
    export_trained,
    join_state,
    read_export,
    split_state,
)
from fedrec.shared.model.recommend import load_trained
from fedrec.shared.model.recommender import trainable_state
from fedrec.shared.model.scoring import score_histories


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    """A MiniLM recommender over 30 synthetic items with a perturbed (trained-looking) state, and its export."""
    ds = make_synthetic(num_users=6, num_items=30, seed=2)
    cfg = RunConfig.from_mapping({"hybrid.releases": ""})  # the language model's own scores (no released statistics)
    model = build_model(cfg, ds.catalog, cached=False)
    rng = np.random.default_rng(0)
    state = {k: (v.numpy() + 0.05 * rng.standard_normal(v.shape)).astype(np.float32)
             for k, v in trainable_state(model).items()}
    set_global_state(model, state)
    out = export_trained(tmp_path_factory.mktemp("export") / "model", model=model, cfg=cfg, catalog=ds.catalog,
                         state=state, run=None)
    return cfg, ds, model, state, out


def test_plain_peft_loads_the_export_and_reproduces_fedrec_scores(trained, minilm_path: Path) -> None:
    """PeftModel.from_pretrained(AutoModel.from_pretrained(base), export) plus the documented formula and the
    export's other files gives the scores fedrec ranks with."""
    from peft import PeftModel
    from safetensors.numpy import load_file
    from transformers import AutoModel, AutoTokenizer

    # Prepare
    cfg, ds, model, _, out = trained
    want = score_histories(model, cfg, ds.catalog, ds.users)
    # Execute: only PEFT, transformers and the export's files
    peft = PeftModel.from_pretrained(AutoModel.from_pretrained(minilm_path), str(out)).eval()
    tok = AutoTokenizer.from_pretrained(minilm_path)
    other = load_file(str(out / OTHER_STATE))
    table = torch.from_numpy(load_file(str(out / EMBEDDINGS))["embeddings"])
    def prompt(user) -> str:  # the card's recipe: prefix, names by weight (stable), each with its top tag
        order = np.argsort(-user.weights, kind="stable")
        names = [f"{ds.catalog.names[i]} ({ds.catalog.tags[i][0]})" if ds.catalog.tags[i] else ds.catalog.names[i]
                 for i in user.items[order]]
        return "Listening history: " + ", ".join(names)

    prompts = [prompt(u) for u in ds.users]
    batch = tok(prompts, padding=True, truncation=True, max_length=cfg.model.history_tokens, return_tensors="pt")
    with torch.no_grad():
        hidden = peft(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1)
        user = F.normalize(pooled @ torch.from_numpy(other["head.weight"]).T, dim=-1)
        got = (user @ table.T) / cfg.model.temperature + torch.from_numpy(other["item_bias.weight"]).T
    # Assert
    np.testing.assert_allclose(got.numpy(), want, atol=1e-4)
    config = json.loads((out / PEFT_CONFIG).read_text())
    assert config["r"] == cfg.model.lora_rank and config["lora_alpha"] == cfg.model.lora_alpha
    assert sorted(config["target_modules"]) == ["query", "value"]
    assert config["base_model_name_or_path"] == "sentence-transformers/all-MiniLM-L6-v2"


def test_fedrec_reloads_its_export_to_identical_scores(trained) -> None:
    """`load_trained(export)` (what the API and `fedrec recommend --run` use) scores exactly as the source model."""
    cfg, ds, model, state, out = trained
    cfg2, catalog2, model2 = load_trained(out)
    np.testing.assert_array_equal(score_histories(model2, cfg2, catalog2, ds.users),
                                  score_histories(model, cfg, ds.catalog, ds.users))
    _, _, state2, _ = read_export(out)
    assert set(state2) == set(state)


def test_every_non_lora_tensor_is_exported_under_its_own_name() -> None:
    """A tensor the scorer may add to the global state (say a popularity prior) lands in fedrec_state unchanged;
    LoRA tensors get PEFT's names, and the split inverts exactly."""
    state = {"encoder.base_model.model.encoder.layer.0.attention.self.query.lora_A.default.weight": np.ones((2, 4)),
             "encoder.base_model.model.encoder.layer.0.attention.self.query.lora_B.default.weight": np.ones((4, 2)),
             "head.weight": np.eye(4), "prior.popularity": np.arange(5.0), "item_bias.weight": np.zeros((5, 1))}
    peft, other = split_state(state)
    assert sorted(peft) == ["base_model.model.encoder.layer.0.attention.self.query.lora_A.weight",
                            "base_model.model.encoder.layer.0.attention.self.query.lora_B.weight"]
    assert sorted(other) == ["head.weight", "item_bias.weight", "prior.popularity"]
    assert join_state(peft, other).keys() == state.keys()


def test_model_card_has_front_matter_and_says_no_guarantee_without_a_report(trained) -> None:
    """README.md: YAML front matter (base_model, library_name, tags); without a signed report, no claim."""
    *_, out = trained
    card = (out / "README.md").read_text()
    head = card.split("---")[1]
    assert "base_model: sentence-transformers/all-MiniLM-L6-v2" in head and "library_name: peft" in head
    assert "- fedrec" in head and "differential-privacy" not in head
    assert "No privacy guarantee is claimed" in card


def test_model_card_copies_the_signed_reports_privacy_figures(tmp_path: Path) -> None:
    """With a run report, the card's privacy table and statements are the report's (unit, epsilon, delta,
    accountant), and the front matter gains the differential-privacy tag."""
    from fedrec.shared.model.model_card import model_card

    ds = make_synthetic(num_users=3, num_items=10, seed=0)
    report = {"report_type": "run", "run_id": "r1", "signature": {"key_fingerprint": "ab:cd"},
              "user_level": {"statement": "USER STATEMENT", "privacy_unit": {"unit": "user", "description": "a user"},
                             "accounting": {"epsilon": 7.91, "delta": 2.5e-4, "accountant": "pld"}}}
    (tmp_path / "privacy-report.json").write_text(json.dumps(report))
    card = model_card(cfg=RunConfig(), catalog=ds.catalog, base="b", targets=["query"], decoder=False, run=tmp_path)
    assert "| user-level | user: a user | 7.91 | 0.00025 | pld |" in card
    assert "> USER STATEMENT" in card and "ab:cd" in card and "- differential-privacy" in card
