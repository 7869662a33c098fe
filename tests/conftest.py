"""Shared fixtures: an isolated catalog-table cache, a tiny synthetic data set and a tiny random Llama decoder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fedrec.shared.data.split import UserSplit, split_users
from fedrec.shared.data.synthetic import make_synthetic
from fedrec.shared.data.types import Catalog


@pytest.fixture(scope="session", autouse=True)
def _isolated_fedrec_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Point FEDREC_CACHE (catalog embedding tables) at a temporary folder, never at ~/.cache/fedrec."""
    cache = tmp_path_factory.mktemp("fedrec-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FEDREC_CACHE", str(cache))
        yield cache


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    """The directory of the bundled all-MiniLM-L6-v2."""
    from fedrec.shared.model.backbone import resolve_model_path

    return resolve_model_path("minilm")


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory, minilm_path: Path) -> Path:
    """A randomly initialised 2-layer Llama (hidden 32) saved with the MiniLM tokenizer: a decoder in < 1 s."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    config = LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        vocab_size=len(tokenizer),
        max_position_embeddings=128,
        pad_token_id=tokenizer.pad_token_id,
        architectures=["LlamaForCausalLM"],
    )
    torch.manual_seed(1234)
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_data() -> tuple[Catalog, list[UserSplit]]:
    """A 50-item synthetic catalog and the leave-one-out splits of its 20 users."""
    ds = make_synthetic(num_users=20, num_items=50, seed=0)
    return ds.catalog, split_users(ds.users, seed=0)


@pytest.fixture(scope="session")
def sim_run(tmp_path_factory: pytest.TempPathFactory):
    """One real Flower simulation (Ray) on 16 synthetic users, 2 rounds of 4 clients: (RunConfig, run dir)."""
    from fedrec.shared.config import RunConfig
    from fedrec.simulations.simulate import simulate

    cfg = RunConfig.from_mapping({"data.source": "synthetic:users=16,items=120,seed=3", "run.rounds": 2,
                                  "run.clients_per_round": 4, "eval.every": 1,
                                  "run.dir": str(tmp_path_factory.mktemp("runs")), "run.name": "e2e"})
    return cfg, simulate(cfg, num_cpus=2)
