"""The SecAgg+ input of a distributed-DP round: a clipped update, rotated, rounded, with the client's noise share.

Same role as `fedrec.shared.secagg.encoding.FixedPointEncoding` (what a client puts in the ring, how the server
reads the sum back), for `user_dp.noise = distributed`: the encoding is `encode_with_noise` of
`fedrec.shared.privacy.distributed_dp` (randomized Hadamard rotation, scaling by gamma, conditional randomized
rounding to the L2 bound Delta_2, a Skellam noise share from a CSPRNG-seeded generator that never leaves the device),
and the decoded sum already carries the noise the accountant counts. The server adds none.

`round_parameters` is how the server derives one round's parameters from the run's calibration: a fresh public
rotation seed every round (the wrap-around bound assumes the updates do not depend on it), t = the survivors this
round needs, and the per-client variance that makes t shares carry the calibrated total V exactly (so every round's
DP event is the same, whatever the number of clients asked).
"""

from __future__ import annotations

import dataclasses
import math
import secrets
from dataclasses import dataclass

import numpy as np

from fedrec.shared.privacy.distributed_dp import (
    DistributedDpParams,
    RoundingError,
    decode_sum,
    encode_with_noise,
    secure_generator,
)
from fedrec.shared.privacy.distributed_dp.encoding import error_bound, noise_std
from fedrec.shared.privacy.distributed_dp.rotation import SEED_BITS
from fedrec.shared.privacy.distributed_dp.samplers import MAX_VARIANCE


def round_parameters(base: DistributedDpParams, *, asked: int, survivor_fraction: float) -> DistributedDpParams:
    """One round's parameters from the run's calibration `base` (calibrated with t = 1, so its per-client variance is
    the total V): t = ceil(f x asked) (at least 1), mu = V / t, a new rotation seed; everything else as calibrated."""
    t = max(1, math.ceil(survivor_fraction * asked - 1e-9))
    t = min(t, base.max_clients)
    mu = min(base.accounted_variance / t * (1 + 1e-12), MAX_VARIANCE)  # t mu >= V: never less noise than calibrated
    return dataclasses.replace(base, min_survivors=t, client_variance=mu, rotation_seed=secrets.randbits(SEED_BITS))


@dataclass(frozen=True)
class DistributedEncoding:
    """One round's distributed-DP encoding (public: every value here may be sent to every client)."""

    params: DistributedDpParams
    #: log10 of the run calibration's bound on P(a modular wrap-around in this round) (None: not stated)
    log10_wrap_probability: float | None = None

    @property
    def ring_bits(self) -> int:
        return self.params.ring_bits

    @property
    def max_clients(self) -> int:
        return self.params.max_clients

    @property
    def clip_norm(self) -> float:
        return self.params.clip_norm

    @property
    def min_survivors(self) -> int:
        return self.params.min_survivors

    def vector_dim(self, dim: int) -> int:
        """The SecAgg vector length for a d-dimensional update: the padded (power-of-two) dimension."""
        if dim != self.params.dim:
            raise ValueError(f"the update has {dim} coordinates, the round's distributed-DP parameters "
                             f"{self.params.dim}")
        return self.params.padded_dim

    def encode(self, x: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """Clip the flat update to S and encode it with this device's noise share (ring words, padded length).

        `rng`: the rounding and noise randomness; None (every device) = a fresh generator seeded from the OS CSPRNG.
        Only a benchmark that simulates many devices in one process passes a seeded one, to be reproducible.
        """
        v = np.asarray(x, dtype=np.float64).ravel()
        if v.size != self.params.dim:
            raise ValueError(f"the update has {v.size} coordinates, the round's parameters {self.params.dim}")
        if not np.all(np.isfinite(v)):
            raise ValueError("the update has non-finite values")
        norm = float(np.linalg.norm(v))
        bound = self.params.clip_norm * (1 - 1e-9)
        if norm > bound:
            v = v * (bound / norm)
        try:
            return encode_with_noise(v, self.params, secure_generator() if rng is None else rng)
        except RoundingError as e:  # practically never (probability < beta^1000); a refusal, not a crash
            raise ValueError(str(e)) from None

    def decode_sum(self, total: np.ndarray, count: int) -> np.ndarray:
        """The noisy float sum (length d) of `count` survivors; ValueError below t, WrapAroundError on a wrap."""
        return decode_sum(np.asarray(total, dtype=self.params.ring_dtype), self.params, survivors=int(count))

    def noise_std(self, survivors: int) -> float:
        """Per-coordinate std of the decoded sum's noise (float units): sqrt(|U| mu) / gamma >= z S."""
        return noise_std(self.params, survivors)

    def quantization_error_bound(self, dim: int, clients: int) -> dict[str, float]:
        """Deterministic rounding error of a decoded sum (the noise aside): L2 below |U| sqrt(d') / gamma."""
        l2 = error_bound(self.params, clients)
        return {"per_coordinate": l2, "l2": l2, "step": 1.0 / self.params.scale}
