"""Bounding one contribution: the L2 clip every path applies before anything is summed.

Used by the device before an update leaves it (`fedrec.client.train`), by the secure-aggregation encoder (to the
slightly smaller norm that survives fixed-point rounding, `fedrec.client.secure_aggregation`) and by the server on
every plain upload under user-level DP (`fedrec.server.round`), so the sensitivity the accountant assumes holds
whatever a client sends. The whole update is one vector: every tensor is scaled by the same factor.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

State = dict[str, np.ndarray]


def l2_norm(state: Mapping[str, np.ndarray]) -> float:
    """Flat L2 norm over every tensor of the state (float64 accumulation)."""
    return math.sqrt(sum(float(np.sum(np.square(v, dtype=np.float64))) for v in state.values()))


def clip_update(delta: Mapping[str, np.ndarray], *, clip_norm: float) -> tuple[State, float]:
    """`delta * min(1, S / ||delta||)` in float32; returns the clipped state and the norm before clipping.

    The result's norm is at most S up to float32 rounding; the factor is shaved by 1e-6 so rounding can never
    push it above S.
    """
    if clip_norm <= 0:
        raise ValueError(f"clip_norm must be > 0, found {clip_norm}")
    norm = l2_norm(delta)
    scale = 1.0 if norm <= clip_norm else clip_norm / norm * (1 - 1e-6)
    return {k: (v * scale).astype(np.float32) for k, v in delta.items()}, norm
