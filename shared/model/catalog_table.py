"""The frozen item table: the base model's embedding of every public item text, computed once and cached on disk.

Each item is encoded as "name | top-5 tags" with the *base* model (no LoRA), mean-pooled and L2-normalised. The
table depends only on public data (the catalog, the base model), so it never crosses the wire: every process
computes or loads it from the cache (`FEDREC_CACHE`, default ~/.cache/fedrec), keyed by a hash of the model files
and the exact texts, and a changed catalog or model can never reuse a stale table.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fedrec.shared.data.types import Catalog
from fedrec.shared.model.backbone import Backbone
from fedrec.shared.progress import task


def encode_texts(
    backbone: Backbone, encoder: nn.Module, texts: list[str], max_tokens: int, batch_size: int = 256
) -> torch.Tensor:
    """(len(texts), d) L2-normalised pooled embeddings, computed without gradients (a progress bar past a batch)."""
    out = []
    encoder_was_training = encoder.training
    encoder.eval()
    with torch.no_grad(), task("encoding the catalog", len(texts) if len(texts) > batch_size else None) as bar:
        for start in range(0, len(texts), batch_size):
            tok = backbone.tokenizer(
                texts[start : start + batch_size], padding=True, truncation=True, max_length=max_tokens,
                return_tensors="pt",
            )
            dev = next(encoder.parameters()).device
            ids, mask = tok["input_ids"].to(dev), tok["attention_mask"].to(dev)
            hidden = encoder(input_ids=ids, attention_mask=mask).last_hidden_state
            out.append(F.normalize(backbone.pool(hidden, mask), dim=-1).cpu())
            bar.advance(ids.shape[0])
    encoder.train(encoder_was_training)
    return torch.cat(out) if out else torch.zeros(0, backbone.hidden_size)


def catalog_texts(catalog: Catalog, max_tags: int = 5) -> list[str]:
    return [catalog.text(i, max_tags) for i in range(len(catalog))]


def default_cache_dir() -> Path:
    return Path(os.environ.get("FEDREC_CACHE", Path.home() / ".cache" / "fedrec"))


def catalog_embeddings(
    backbone: Backbone, catalog: Catalog, max_tokens: int = 32, cache_dir: Path | None = None
) -> torch.Tensor:
    """The frozen item table (N, d) from the *base* model, cached on disk by content hash.

    The key covers the model directory's config and weights file sizes, the exact item texts and the token
    budget, so a changed catalog or model can never reuse a stale table.
    """
    texts = catalog_texts(catalog)
    h = hashlib.sha256()
    h.update(str(backbone.path.resolve()).encode())
    for f in sorted(backbone.path.glob("*")):
        if f.is_file():
            h.update(f"{f.name}:{f.stat().st_size}".encode())
    h.update(f"max_tokens={max_tokens};decoder={backbone.is_decoder}".encode())
    for t in texts:
        h.update(t.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    cache = (cache_dir or default_cache_dir()) / f"catalog-{h.hexdigest()[:24]}.npy"
    if cache.is_file():
        table = np.load(cache)
        if table.shape == (len(texts), backbone.hidden_size):
            return torch.from_numpy(table)
    table_t = encode_texts(backbone, backbone.model, texts, max_tokens)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".tmp{os.getpid()}.npy")
    np.save(tmp, table_t.cpu().numpy())
    os.replace(tmp, cache)  # atomic: concurrent workers never read a half-written table
    return table_t
