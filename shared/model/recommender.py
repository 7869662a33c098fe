"""The two-tower text recommender: a LoRA-adapted user tower over a frozen, cached catalog table.

score(user, item) = s * <normalize(head(pool(LM_lora(history prompt)))), e_item> + b_item

- `e_item` is the base model's normalised embedding of the public item text ("name | top tags"), computed once
  per (model, catalog) and cached on disk. It is public: it depends on nothing private.
- The trainable state is the LoRA adapters, the user-side projection `head` (d x d, identity at start) and a
  per-item bias `b`. Putting the projection on the user side keeps the bilinear form <W u, e> = <u, W^T e>
  while every trainable layer still sees a batch of *examples* on dim 0, which is what Opacus needs to compute
  per-example gradients (a projection applied to the catalog table would see 17k "examples").
- The per-item bias is a `Linear(1, N)` applied to a column of ones: a plain bias vector whose per-example
  gradient Opacus computes like any Linear weight.
- The alternative design, a trainable item tower (the same LoRA encoder on the item text) with sampled
  negatives, is `candidate_logits`; docs/design-item-tower.md compares both with measured numbers.

Every loss here is per example: an example's logits depend on its own prompt and the public catalog only.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fedrec.shared.model.backbone import Backbone


class Recommender(nn.Module):
    """User tower (LoRA LM + projection) scored against a fixed catalog table, plus a learned item bias."""

    def __init__(
        self,
        backbone: Backbone,
        encoder: nn.Module,
        catalog_table: torch.Tensor,
        *,
        head: bool = True,
        item_bias: bool = True,
        temperature: float = 0.05,
    ) -> None:
        super().__init__()
        self.backbone = backbone  # tokenizer + pooling rule; its model is `encoder`'s base
        self.encoder = encoder  # peft-wrapped backbone.model
        d = backbone.hidden_size
        n = catalog_table.shape[0]
        self.head = nn.Linear(d, d, bias=False) if head else None
        if self.head is not None:
            with torch.no_grad():
                self.head.weight.copy_(torch.eye(d))
        self.item_bias = nn.Linear(1, n, bias=False) if item_bias else None
        if self.item_bias is not None:
            nn.init.zeros_(self.item_bias.weight)
        self.register_buffer("catalog", catalog_table.float(), persistent=False)  # (N, d), public
        self.scale = 1.0 / temperature

    def user_vectors(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, d)
        u = self.backbone.pool(hidden, attention_mask)  # (B, d)
        if self.head is not None:
            u = self.head(u)
        return F.normalize(u, dim=-1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Logits over the whole catalog, (B, N)."""
        u = self.user_vectors(input_ids, attention_mask)  # (B, d)
        logits = self.scale * (u @ self.catalog.T)  # (B, N)
        if self.item_bias is not None:
            logits = logits + self.item_bias(torch.ones_like(u[:, :1]))  # (B, 1) -> (B, N)
        return logits

    def encode_items(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Trainable item tower (shared LoRA encoder, no head): (B, T) item tokens -> (B, d)."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return F.normalize(self.backbone.pool(hidden, attention_mask), dim=-1)

    def candidate_logits(
        self,
        input_ids: torch.Tensor,  # (B, T) history prompt
        attention_mask: torch.Tensor,  # (B, T)
        cand_ids: torch.Tensor,  # (B, K, L) candidate item texts, slot 0 = target
        cand_mask: torch.Tensor,  # (B, K, L)
    ) -> torch.Tensor:
        """(B, K) logits for per-example candidates, each slot encoded with batch dimension B.

        Encoding the slots one at a time (never as one (B*K, L) batch) keeps dim 0 = examples in every
        layer, so Opacus clips per example rather than per candidate sequence.
        """
        u = self.user_vectors(input_ids, attention_mask)  # (B, d)
        scores = [(u * self.encode_items(cand_ids[:, k], cand_mask[:, k])).sum(-1) for k in range(cand_ids.shape[1])]
        return self.scale * torch.stack(scores, dim=1)  # (B, K)


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Name -> tensor of every trainable parameter: the adapter state that crosses the wire."""
    return {name: p.detach().cpu() for name, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model: nn.Module, state: dict[str, np.ndarray | torch.Tensor]) -> None:
    """Copy `state` into the trainable parameters; names and shapes must match exactly."""
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    missing, extra = sorted(set(params) - set(state)), sorted(set(state) - set(params))
    if missing or extra:
        raise ValueError(f"adapter state does not fit the model: missing {missing[:5]}, unexpected {extra[:5]}")
    with torch.no_grad():
        for name, p in params.items():
            value = torch.as_tensor(np.asarray(state[name]), dtype=p.dtype).to(p.device)
            if value.shape != p.shape:
                raise ValueError(f"adapter tensor {name}: shape {tuple(value.shape)} != model's {tuple(p.shape)}")
            p.copy_(value)
