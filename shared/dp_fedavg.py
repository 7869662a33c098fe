"""Client-side half of DP-FedAvg (McMahan et al. 2018): bound each user's contribution by clipping.

The client scales its whole adapter delta (every tensor together, one flat L2 norm) to norm <= S before it
leaves the device. The server adds Gaussian noise of standard deviation z * S to the *sum* of the clipped
deltas (`fedrec.server.central_dp`). One user changes that sum by at most S, so the sensitivity the accountant
assumes holds by construction, whatever the user's data.
"""

from __future__ import annotations

import math

import numpy as np

State = dict[str, np.ndarray]


def l2_norm(state: State) -> float:
    """Flat L2 norm over every tensor of the state (float64 accumulation)."""
    return math.sqrt(sum(float(np.sum(np.square(v, dtype=np.float64))) for v in state.values()))


def clip_state(delta: State, *, clip_norm: float) -> tuple[State, float]:
    """`delta * min(1, S / ||delta||)`; returns the clipped state and the norm before clipping.

    The result's norm is at most S up to float32 rounding; the factor is shaved by 1e-6 so rounding can never
    push it above S.
    """
    if clip_norm <= 0:
        raise ValueError(f"clip_norm must be > 0, found {clip_norm}")
    norm = l2_norm(delta)
    scale = 1.0 if norm <= clip_norm else clip_norm / norm * (1 - 1e-6)
    return {k: (v * scale).astype(np.float32) for k, v in delta.items()}, norm


def default_delta(population: int) -> float:
    """User-level delta = 1 / N^1.1: below 1/N, so the guarantee cannot be met by leaking one whole user."""
    return 1.0 / population**1.1
