"""The Gaussian mechanism on a sum: the one function that adds central DP noise, whatever is being released.

DP-FedAvg (`fedrec.server.release`) adds N(0, (z S)^2) to every coordinate of the sum of clipped contributions
before dividing by a public denominator. The noise is drawn in float64 from the caller's generator, tensor by
tensor in the order of the sum's keys, so a run that restores its generator (a resumed run) draws exactly the
noise an uninterrupted run would have drawn.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def add_gaussian_noise(total: Mapping[str, np.ndarray], *, std: float,
                       rng: np.random.Generator) -> dict[str, np.ndarray]:
    """`total + N(0, std^2 I)` per tensor, in float64."""
    if std < 0:
        raise ValueError(f"std must be >= 0, found {std}")
    return {k: np.asarray(v, dtype=np.float64) + rng.normal(0.0, std, size=np.shape(v)) for k, v in total.items()}
