"""A trained model as a standard PEFT adapter directory, plus every other tensor, the catalog and a model card.

    OUT/
      adapter_config.json             PEFT's LoraConfig: base_model_name_or_path, r, lora_alpha, target_modules
      adapter_model.safetensors       the LoRA tensors under PEFT's names
      fedrec_state.safetensors        every other tensor of the global state, under its fedrec name (today
                                      `head.weight` (d, d) and `item_bias.weight` (N, 1); whatever the scorer adds
                                      travels here the same way)
      catalog_embeddings.safetensors  `embeddings` (N, d) float32: the item table the scores are computed against;
                                      row i is item i of catalog.json
      catalog.json                    the public catalog: item ids, names, tags (row order of every item-side tensor)
      fedrec_config.json              the run's settings and where the export came from: what `fedrec.shared.api`
                                      and `fedrec recommend` read to score exactly as fedrec does
      README.md                       the model card (Hugging Face format: YAML front matter, then the body)

`PeftModel.from_pretrained(AutoModel.from_pretrained(BASE), OUT)` loads the LoRA part with plain PEFT; the card
gives the scoring formula that combines it with the other files. The split is by name and generic: a global
state tensor is a PEFT tensor when it sits under the peft-wrapped encoder (`encoder.`) and is a LoRA weight
(`.lora_`); every other tensor goes to `fedrec_state.safetensors` unchanged, so a scorer with more parts exports
without changes here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from fedrec.shared.config import RunConfig
from fedrec.shared.data.types import Catalog
from fedrec.shared.io import atomic_write_bytes, atomic_write_text, package_version
from fedrec.shared.model.backbone import DEFAULT_MODEL, resolve_model_path
from fedrec.shared.run_dir import write_released

PEFT_CONFIG = "adapter_config.json"
PEFT_WEIGHTS = "adapter_model.safetensors"
OTHER_STATE = "fedrec_state.safetensors"
EMBEDDINGS = "catalog_embeddings.safetensors"
CATALOG = "catalog.json"
CONFIG = "fedrec_config.json"
CARD = "README.md"
FORMAT = "fedrec-export-v1"
#: the Hugging Face Hub name of the bundled base model (the same weights as `resolve_model_path("minilm")`)
BUNDLED_BASE = "sentence-transformers/all-MiniLM-L6-v2"

_ENCODER = "encoder."  # the Recommender's peft-wrapped backbone
_LORA = re.compile(r"\.(lora_[A-Za-z_]+)\.default\.")  # ".lora_A.default." -> PEFT's ".lora_A."


def is_export(path: Path) -> bool:
    """True for a directory written by `export_model` (as opposed to a run or device state directory)."""
    return (Path(path) / CONFIG).is_file() and (Path(path) / PEFT_CONFIG).is_file()


def split_state(state: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(PEFT tensors under PEFT's names, every other tensor under its fedrec name)."""
    peft, other = {}, {}
    for name, value in state.items():
        if name.startswith(_ENCODER) and _LORA.search(name):
            peft[_LORA.sub(r".\1.", name[len(_ENCODER):])] = value
        else:
            other[name] = value
    return peft, other


def join_state(peft: dict[str, np.ndarray], other: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The inverse of `split_state`: the global state under fedrec's names."""
    state = {_ENCODER + re.sub(r"\.(lora_[A-Za-z_]+)\.", r".\1.default.", name): v for name, v in peft.items()}
    clash = sorted(set(state) & set(other))
    if clash:
        raise ValueError(f"export: {OTHER_STATE} repeats LoRA tensors {clash[:3]}")
    return {**state, **other}


def base_model_name(cfg: RunConfig) -> str:
    """What `base_model_name_or_path` and the card name: the Hub id of the bundled model, else the local path."""
    return BUNDLED_BASE if cfg.model.name in ("", DEFAULT_MODEL) else str(resolve_model_path(cfg.model.name))


def _lora_targets(peft: dict[str, np.ndarray]) -> list[str]:
    """Module leaf names that carry LoRA weights (`...attention.self.query.lora_A.weight` -> `query`)."""
    return sorted({name.split(".lora_", 1)[0].rsplit(".", 1)[-1] for name in peft})


def _save_safetensors(path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> None:
    from safetensors.numpy import save

    atomic_write_bytes(path, save({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()},
                                  metadata=metadata))


def export_model(out: Path, *, cfg: RunConfig, catalog: Catalog, state: dict[str, np.ndarray],
                 table: np.ndarray, source: dict[str, Any], card: str,
                 released: dict[str, np.ndarray] | None = None) -> Path:
    """Write the export directory `out` (see the module docstring); returns it.

    `state` is the global state (adapter.safetensors), `table` the (N, d) item table the scores use, `source`
    what it was exported from (recorded in fedrec_config.json), `card` the model card text, `released` the
    run's released statistics (`released.safetensors`, the hybrid scorer's other inputs; absent without them).
    """
    from peft import LoraConfig

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    peft, other = split_state(state)
    if not peft:
        raise ValueError("export: the state holds no LoRA tensor (names with '.lora_' under 'encoder.')")
    targets = _lora_targets(peft)
    lora = LoraConfig(r=cfg.model.lora_rank, lora_alpha=cfg.model.lora_alpha, lora_dropout=0.0,
                      target_modules=targets, bias="none", fan_in_fan_out="c_attn" in targets,
                      base_model_name_or_path=base_model_name(cfg))
    lora.save_pretrained(str(out))  # adapter_config.json, PEFT's own format
    meta = {"format": FORMAT, "fedrec": package_version("fedrec")}
    _save_safetensors(out / PEFT_WEIGHTS, peft, meta)
    _save_safetensors(out / OTHER_STATE, other, meta)
    if table.shape[0] != len(catalog):
        raise ValueError(f"export: item table has {table.shape[0]} rows for a catalog of {len(catalog)} items")
    _save_safetensors(out / EMBEDDINGS, {"embeddings": table}, {**meta, "rows": "catalog.json item order"})
    atomic_write_text(out / CATALOG, json.dumps({"item_ids": catalog.item_ids, "names": catalog.names,
                                                 "tags": catalog.tags}, ensure_ascii=False))
    atomic_write_text(out / CONFIG, json.dumps({"format": FORMAT, "config": cfg.to_nested(), "source": source,
                                                "base_model": base_model_name(cfg), "lora_targets": targets},
                                               indent=2))
    atomic_write_text(out / CARD, card)
    if released:
        write_released(out, released)
    return out


def read_export(path: Path) -> tuple[RunConfig, Catalog, dict[str, np.ndarray], np.ndarray]:
    """(settings, catalog, global state, item table) of an export directory, every file checked by name."""
    from safetensors.numpy import load_file

    path = Path(path)
    for name in (CONFIG, PEFT_WEIGHTS, OTHER_STATE, EMBEDDINGS, CATALOG):
        if not (path / name).is_file():
            raise FileNotFoundError(f"{path / name}: missing; not a complete fedrec export")
    doc = json.loads((path / CONFIG).read_text())
    if doc.get("format") != FORMAT:
        raise ValueError(f"{path / CONFIG}: format {doc.get('format')!r}, expected {FORMAT!r}")
    cfg = RunConfig.from_mapping(doc["config"], source=str(path / CONFIG))
    cat = json.loads((path / CATALOG).read_text(encoding="utf-8"))
    catalog = Catalog(cat["item_ids"], cat["names"], cat["tags"])
    state = join_state(dict(load_file(str(path / PEFT_WEIGHTS))), dict(load_file(str(path / OTHER_STATE))))
    table = load_file(str(path / EMBEDDINGS))["embeddings"]
    if table.shape[0] != len(catalog):
        raise ValueError(f"{path / EMBEDDINGS}: {table.shape[0]} rows for {len(catalog)} catalog items")
    return cfg, catalog, state, table


def export_trained(out: Path, *, model: Any, cfg: RunConfig, catalog: Catalog, state: dict[str, np.ndarray],
                   run: Path | None, released: dict[str, np.ndarray] | None = None) -> Path:
    """Export a recommender holding `state` (and scoring-ready: its item table is the one exported), with the
    model card made from `run`'s files (`fedrec.shared.model.model_card`)."""
    from fedrec.shared.model.model_card import model_card

    peft, _ = split_state(state)
    card = model_card(cfg=cfg, catalog=catalog, base=base_model_name(cfg), targets=_lora_targets(peft),
                      decoder=bool(model.backbone.is_decoder), run=run)
    table = model.catalog.detach().float().cpu().numpy()
    source = {"run": str(Path(run).resolve()) if run is not None else None}
    return export_model(out, cfg=cfg, catalog=catalog, state=state, table=table, source=source, card=card,
                        released=released)
