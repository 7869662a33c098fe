"""Int8 dynamic quantization of the user tower for on-device inference (`fedrec recommend --int8`).

What is quantized: every `nn.Linear` of the language-model backbone (attention projections, feed-forward layers),
after the LoRA adapter has been merged into the base weights. Weights are stored as int8 with one scale per
output channel; activations are quantized per batch at run time ("dynamic"), so no calibration data is needed and
nothing private is involved. What stays float32: the token embeddings, LayerNorms, the user-side `head`
projection (one d x d matmul per user), the per-item bias (a bias vector: int8 would round away popularity) and
the catalog table, which was computed by the float32 base model (and, with a trainable item tower, re-encoded
with the float32 adapter before quantization). Inference only: a quantized model has no trainable parameters.

Why merge first: peft's LoRA layer wraps the base `nn.Linear` and holds its A and B as further `nn.Linear`s.
`quantize_dynamic` would swap all three for int8 modules, quantizing the small low-rank factors separately, and
peft's forward then fails (it reads `base_layer.weight.dtype`, and a quantized layer's `weight` is a method).
Merging computes W + (alpha / r) B A in float32 once; quantizing the merged W costs one int8 matmul per layer.

Which API: torch 2.13 still ships `torch.ao.quantization.quantize_dynamic` but marks it deprecated in favour of
torchao's `quantize_`. Measured on this project's 2-core x86 CPU (MiniLM, batch of 4 prompts of 64 tokens, one
thread): float32 63 ms, torch.ao dynamic int8 38-40 ms, torchao 0.18 `Int8DynamicActivationInt8WeightConfig`
422 ms (no fused CPU kernel), torchao `Int8WeightOnlyConfig` 65 ms (no speed-up); torchao is also a further
28 MB package. So fedrec uses torch.ao with per-channel weight scales (per-tensor scales: cosine 0.94 to the
float32 user vector in that check, per-channel 0.99) and silences only its deprecation warnings. If a later torch
removes the API, `quantize_int8` fails with a clear message rather than falling back to float32 silently.
"""

from __future__ import annotations

import platform
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from fedrec.shared.model.recommender import Recommender


class Int8Unsupported(ValueError):
    """The model or this machine's torch cannot run int8 dynamic quantization."""


@dataclass(frozen=True)
class Int8Summary:
    """What `quantize_int8` changed, for the command line and the benchmark to report."""

    engine: str  # torch.backends.quantized.engine used (x86/fbgemm on x86-64, qnnpack on ARM)
    layers: int  # nn.Linear layers replaced by int8 dynamic ones
    float_bytes: int  # bytes of those layers' float32 weights before
    int8_bytes: int  # bytes of their int8 weights after (scales and biases not counted)
    kept_float: tuple[str, ...] = ()  # backbone Linear layers deliberately left in float32


def merge_lora(model: Recommender) -> None:
    """Fold the LoRA adapter into the base weights (W + alpha/r B A); `model.encoder` becomes the plain base model.

    In place and irreversible: the model can no longer load or train an adapter. Scores do not change (up to
    float rounding). A model without peft LoRA layers is left as it is.
    """
    from peft import PeftModel

    if isinstance(model.encoder, PeftModel):
        model.encoder = model.encoder.merge_and_unload()
    model.backbone.model = model.encoder


def _supported_engines() -> list[str]:
    return list(torch.backends.quantized.supported_engines)


def _pick_engine() -> str:
    """The quantized engine for this CPU: torch's current choice if it is a real one, else one that fits."""
    supported = [e for e in _supported_engines() if e != "none"]
    if not supported:
        raise Int8Unsupported(
            f"int8 quantization: this torch build ({torch.__version__}, {platform.machine()}) has no quantized CPU "
            "engine (torch.backends.quantized.supported_engines lists none); run without --int8")
    current = torch.backends.quantized.engine
    if current in supported:
        return current
    arm = platform.machine().lower() in ("aarch64", "arm64") or platform.machine().lower().startswith("arm")
    preference = ("qnnpack",) if arm else ("x86", "fbgemm", "onednn", "qnnpack")
    engine = next((e for e in preference if e in supported), supported[0])
    torch.backends.quantized.engine = engine
    return engine


def quantize_int8(model: Recommender) -> Int8Summary:
    """Merge LoRA, then replace every `nn.Linear` of the backbone by an int8 dynamic one (in place, CPU only).

    Raises `Int8Unsupported` if the model is not on the CPU, torch has no quantized engine or no
    `quantize_dynamic`, or the backbone has no float `nn.Linear` to quantize (e.g. GPT-2's `Conv1D` layers, or a
    model quantized already).
    """
    device = model.catalog.device
    if device.type != "cpu":
        raise Int8Unsupported(f"int8 dynamic quantization runs on the CPU only; the model is on {device} "
                              "(unset FEDREC_DEVICE or run without --int8)")
    try:
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic
    except ImportError as e:  # removed in a later torch: say so rather than silently serving float32
        raise Int8Unsupported(f"int8: torch {torch.__version__} has no torch.ao.quantization.quantize_dynamic "
                              f"({e}); run without --int8") from None
    engine = _pick_engine()
    merge_lora(model)
    encoder = model.encoder
    linears = [m for m in encoder.modules() if type(m) is nn.Linear]
    if not linears:
        kinds = sorted({type(m).__name__ for m in encoder.modules()})[:12]
        raise Int8Unsupported(
            f"int8: the backbone {model.backbone.path} has no float nn.Linear layer to quantize (already quantized, "
            f"or an architecture whose projections are other modules; it has {kinds})")
    float_bytes = sum(m.weight.numel() * m.weight.element_size() for m in linears)
    with warnings.catch_warnings():
        # torch 2.13 deprecates the API in favour of torchao (see the module docstring for why it is kept)
        warnings.filterwarnings("ignore", r".*torch\.ao\.quantization is deprecated", DeprecationWarning)
        warnings.filterwarnings("ignore", r".*quantized tensor creation functions.*deprecated", UserWarning)
        quantize_dynamic(encoder, {nn.Linear: per_channel_dynamic_qconfig}, inplace=True)
    quantized = [m for m in encoder.modules() if isinstance(m, torch.ao.nn.quantized.dynamic.Linear)]
    left = [name for name, m in encoder.named_modules() if type(m) is nn.Linear]
    if len(quantized) != len(linears) or left:  # never report int8 for a partly float model
        raise Int8Unsupported(f"int8: quantized {len(quantized)} of {len(linears)} Linear layers; "
                              f"still float: {left[:5]}")
    int8_bytes = sum(m.weight().numel() for m in quantized)
    model.eval()
    return Int8Summary(engine=engine, layers=len(quantized), float_bytes=float_bytes, int8_bytes=int8_bytes)
