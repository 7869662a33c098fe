"""Rank the catalog for one listening history and explain each recommendation.

The reason given for an item is the set of history items closest to it in the model's item space ("because you
played X, Y"): cosine similarity between catalog embeddings, the same table the recommender scores against.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fedrec.shared.config import RunConfig
from fedrec.shared.data.types import Catalog, UserHistory
from fedrec.shared.metrics import topk_excluding
from fedrec.shared.model.build import build_model, set_global_state
from fedrec.shared.model.export import is_export, read_export
from fedrec.shared.model.recommender import Recommender
from fedrec.shared.model.scoring import prepare_for_scoring, score_histories
from fedrec.shared.run_dir import ADAPTER, RELEASED, read_adapter, read_catalog, read_config, read_released


@dataclass(frozen=True)
class Recommendation:
    item: int
    name: str
    tags: list[str]
    score: float
    because: list[str]  # names of the closest history items


def load_trained(run_dir: Path, adapter: Path | None = None) -> tuple[RunConfig, Catalog, Recommender]:
    """The config, catalog and recommender with the final global adapter loaded, from a run directory, a device's
    state directory or an export directory (`fedrec.shared.model.export`); `model.released` holds the released
    statistics the hybrid scorer combines with it (`score_histories`)."""
    run_dir = Path(run_dir)
    if adapter is None and is_export(run_dir):
        cfg, catalog, state, table = read_export(run_dir)
        model = build_model(cfg, catalog, cached=False, table=torch.from_numpy(np.ascontiguousarray(table)))
        set_global_state(model, state)
    else:
        cfg = read_config(run_dir)
        catalog = read_catalog(run_dir)
        model = build_model(cfg, catalog, cached=False)
        path = adapter or run_dir / ADAPTER
        if adapter is not None or path.is_file() or not (run_dir / RELEASED).is_file():
            set_global_state(model, read_adapter(path))
        # else: a run of released statistics only (run.rounds = 0): the adapter is the untrained start (B = 0)
    model.released = read_released(run_dir)  # the hybrid scorer's released statistics ({} without them)
    prepare_for_scoring(model, catalog, cfg)
    return cfg, catalog, model


def recommend(
    model: Recommender, cfg: RunConfig, catalog: Catalog, history: UserHistory, top_k: int = 10, reasons: int = 2
) -> list[Recommendation]:
    """Top-k catalog items for `history` (items already in it excluded), each with its closest history items."""
    if len(history) == 0:
        raise ValueError(f"history of user {history.user_id!r} has no item of the model's catalog")
    scores = score_histories(model, cfg, catalog, [history])[0]
    top = topk_excluding(scores, history.items, top_k)
    table = model.catalog.numpy()  # (N, d), rows L2-normalised
    sims = table[top] @ table[history.items].T  # (k, n_history)
    out = []
    for row, item in enumerate(top):
        closest = np.argsort(-sims[row], kind="stable")[:reasons]
        out.append(Recommendation(
            item=int(item), name=catalog.names[item], tags=catalog.tags[item][:3], score=float(scores[item]),
            because=[catalog.names[int(history.items[j])] for j in closest],
        ))
    return out
