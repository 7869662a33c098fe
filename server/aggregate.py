"""FedAvg over adapter deltas: global <- global + server_lr * weighted mean of the clients' deltas.

Working on deltas (client minus global) rather than on client weights is what later lets each client clip its
whole update to an L2 bound (user-level DP) and lets secure aggregation sum updates whose size is bounded.
Equal weights are the default: the weight of a client must not depend on its private data size once DP and
secure aggregation are on (an example count would be sent in the clear and would change the sensitivity).
"""

from __future__ import annotations

import numpy as np

from fedrec.shared.wire import State


def weighted_mean(deltas: list[State], weights: list[float]) -> State:
    """sum_i w_i * delta_i / sum_i w_i, per tensor, in float64 then cast back to float32."""
    if not deltas:
        raise ValueError("no client deltas to aggregate")
    if len(weights) != len(deltas):
        raise ValueError(f"{len(deltas)} deltas but {len(weights)} weights")
    total = float(sum(weights))
    if total <= 0:
        raise ValueError(f"aggregation weights must sum to > 0, found {total}")
    out: State = {}
    for key in deltas[0]:
        acc = np.zeros(deltas[0][key].shape, dtype=np.float64)
        for d, w in zip(deltas, weights, strict=True):
            acc += w * d[key]
        out[key] = (acc / total).astype(np.float32)
    return out


def apply_update(global_state: State, mean_delta: State, server_lr: float) -> State:
    return {k: (v + server_lr * mean_delta[k]).astype(np.float32) for k, v in global_state.items()}
