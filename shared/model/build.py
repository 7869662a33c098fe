"""Build the recommender once per process and load adapter states into it.

`build_model` keeps one model per (settings, catalog) per process: a Flower worker (or the in-process engine)
serves many client messages with the same backbone, tokenizer and catalog table, and every message loads the
global adapter into the cached model before use, so nothing is loaded twice. The seeded starting adapter is kept
apart (`initial_state`), because clients train the cached object in place.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np
import torch

from fedrec.shared.config import RunConfig
from fedrec.shared.data.types import Catalog
from fedrec.shared.model.backbone import attach_lora, load_backbone
from fedrec.shared.model.catalog_table import catalog_embeddings, catalog_texts
from fedrec.shared.model.recommender import Recommender, load_trainable_state, trainable_state

_MODEL_CACHE: dict[str, Recommender] = {}


_CATALOG_KEYS: dict[int, tuple[Catalog, str]] = {}


def catalog_key(catalog: Catalog) -> str:
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


def build_model(cfg: RunConfig, catalog: Catalog, *, cached: bool = True, table: torch.Tensor | None = None
                ) -> Recommender:
    """The recommender for `cfg` over `catalog`: backbone, cached catalog table, LoRA, head, item bias.

    With `cached`, one model per (settings, catalog) is kept per process and reused for every client message
    the process serves; callers load the global adapter state into it before use, so nothing is loaded twice.
    `table` (N, d) is an item table to use instead of computing one (an export ships its own); not with `cached`.
    """
    if cached and table is not None:
        raise ValueError("build_model: an item table can only be given with cached=False")
    m = cfg.model
    key = "|".join(str(x) for x in (m.name, m.lora_rank, m.lora_alpha, m.lora_targets, m.lora_layers, m.lora_freeze_a,
                                    m.head, m.item_bias, m.temperature, m.item_tokens, catalog_key(catalog)))
    if cached and key in _MODEL_CACHE:
        return _MODEL_CACHE[key]
    torch.manual_seed(0)  # LoRA A init must be identical everywhere: it is the starting global state
    backbone = load_backbone(cfg.model.name, device=os.environ.get("FEDREC_DEVICE", "cpu"))  # runtime-only setting
    if table is None:
        table = catalog_embeddings(backbone, catalog, cfg.model.item_tokens)  # base model, before LoRA is attached
    encoder = attach_lora(backbone, m.lora_rank, m.lora_alpha, m.lora_target_list, top_layers=m.lora_layers,
                          freeze_a=m.lora_freeze_a)
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


def set_global_state(model: Recommender, state: dict[str, np.ndarray]) -> None:
    load_trainable_state(model, state)
