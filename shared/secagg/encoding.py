"""Fixed-point encoding of a clipped update into the ring Z_2^b (b = 32 or 64), overflow-free by construction.

Masks are uniform ring elements, so the values they hide must be ring elements too. A client's delta x (all
tensors flattened, float) with ||x||_2 <= S is encoded as q = round(x * scale), stored modulo 2^b in two's
complement. The server adds up to `max_clients` encodings and reads the sum back as a signed integer.

Why the sum cannot overflow: every coordinate satisfies |x_i| <= ||x||_2 <= S, so |q_i| <= B := S * scale (B an
integer, so rounding cannot step past it). With B = floor((2^(b-1) - 1) / max_clients), the true integer sum
of at most `max_clients` encodings has |sum_i| <= max_clients * B < 2^(b-1): it fits the signed range, and the
two's complement view of the ring sum *is* the integer sum. No coordinate is ever clipped: `encode` refuses an
input whose encoding is out of bounds instead of changing it.

Why the L2 bound survives rounding: rounding moves each coordinate by at most 1/(2 scale), the whole vector by
at most sqrt(d)/(2 scale). `input_clip_norm(d)` is S minus that margin (and a 1e-9 relative float margin), so a
vector clipped to it still has ||q / scale||_2 <= S after rounding, and the DP sensitivity S holds for what is
actually summed; `encode` checks ||q||_2 <= B.

Quantization error (deterministic round-to-nearest, bias at most one half step per coordinate): at most
1/(2 scale) per coordinate per client, so at most n/(2 scale) on a coordinate of a sum of n clients, against
DP noise of standard deviation z*S per coordinate: a ratio of n / (2 B z), about 2e-8 for the defaults.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from fedrec.shared.secagg.errors import SecAggError

if TYPE_CHECKING:  # only for the annotation: the encoding itself needs no configuration at run time
    from fedrec.shared.config import RunConfig

RING_BITS = (32, 64)
# float64 represents integers exactly up to 2^53: larger per-coordinate bounds would make `rint` inexact.
_MAX_BOUND = 2**52
# The smallest per-coordinate bound accepted: 2^12 levels per unit of S; anything coarser is almost surely a
# misconfiguration (too many clients for a 32-bit ring) and would drown the update in quantization error.
_MIN_BOUND = 2**12
_FLOAT_MARGIN = 1e-9


class EncodingError(SecAggError, ValueError):
    """An input cannot be encoded without changing it (non-finite, or its norm exceeds the bound)."""


@dataclass(frozen=True)
class FixedPointEncoding:
    """The public encoding of one round: every client and the server derive the same scale from it.

    Args:
        clip_norm: S, the L2 bound of every client's whole delta (user-clip-norm).
        max_clients: an upper bound on how many encodings are summed (the number of clients asked this round).
        ring_bits: b, the ring is Z_2^b; 32 keeps the upload the size of float32, 64 leaves room for millions
            of clients.
    """

    clip_norm: float
    max_clients: int
    ring_bits: int = 32

    def __post_init__(self) -> None:
        if self.ring_bits not in RING_BITS:
            raise ValueError(f"ring_bits must be one of {RING_BITS}, found {self.ring_bits}")
        if not (math.isfinite(self.clip_norm) and self.clip_norm > 0):
            raise ValueError(f"clip_norm must be finite and > 0, found {self.clip_norm}")
        if self.max_clients < 1:
            raise ValueError(f"max_clients must be >= 1, found {self.max_clients}")
        if self.bound < _MIN_BOUND:
            raise ValueError(f"a {self.ring_bits}-bit ring leaves only {self.bound} levels per clip norm for "
                             f"{self.max_clients} clients (need >= {_MIN_BOUND}); use ring_bits=64")

    @property
    def bound(self) -> int:
        """B: the largest |q_i| a client may send; max_clients * B < 2^(b-1)."""
        return min(_MAX_BOUND, (2 ** (self.ring_bits - 1) - 1) // self.max_clients)

    @property
    def scale(self) -> float:
        """Integer units per unit of the delta: S maps to B."""
        return self.bound / self.clip_norm

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint32 if self.ring_bits == 32 else np.uint64)

    def vector_dim(self, dim: int) -> int:
        """The SecAgg vector length for a d-dimensional update: d (one ring word per coordinate)."""
        return dim

    def input_clip_norm(self, dim: int) -> float:
        """The L2 norm to clip a d-dimensional delta to before `encode`, so rounding cannot take it past S."""
        margin = math.sqrt(dim) / (2 * self.scale)
        out = self.clip_norm * (1 - _FLOAT_MARGIN) - margin
        if out <= 0.5 * self.clip_norm:
            raise ValueError(f"dimension {dim} too large for the ring: rounding margin {margin:.3g} >= S/2")
        return out

    def encode(self, x: np.ndarray) -> np.ndarray:
        """round(x * scale) as ring elements (uint32/uint64). Raises EncodingError instead of clipping."""
        v = np.asarray(x, dtype=np.float64).ravel()
        if not np.all(np.isfinite(v)):
            raise EncodingError("input has non-finite values")
        q = np.rint(v * self.scale)  # (d,) integers held exactly in float64, |q_i| <= 2^52
        norm = float(np.sqrt(np.dot(q, q)))
        if norm > self.bound:
            raise EncodingError(f"encoded L2 norm {norm / self.scale:.9g} exceeds S = {self.clip_norm:.9g}; clip "
                                f"the input to input_clip_norm(d) = {self.input_clip_norm(v.size):.9g} first")
        signed = q.astype(np.int64)
        return signed.astype(self.dtype) if self.ring_bits == 64 else (signed % 2**32).astype(np.uint32)

    def decode_sum(self, total: np.ndarray, count: int) -> np.ndarray:
        """The float64 sum of `count` <= max_clients encodings, from their ring sum."""
        if not 0 <= count <= self.max_clients:
            raise ValueError(f"count must be in 0..{self.max_clients}, found {count}")
        ring = np.asarray(total, dtype=self.dtype)
        signed = ring.view(np.int32 if self.ring_bits == 32 else np.int64)  # two's complement = the integer sum
        return signed.astype(np.float64) / self.scale

    def quantization_error_bound(self, dim: int, clients: int) -> dict[str, float]:
        """Worst-case error of a decoded sum of `clients` encodings of d-dimensional deltas.

        `per_coordinate` and `l2` come from rounding; `clip_margin` is how much tighter than S each client clips
        (`input_clip_norm`), a bias of at most that much per client in L2.
        """
        half = 1.0 / (2 * self.scale)
        return {"per_coordinate": clients * half, "l2": clients * half * math.sqrt(dim),
                "clip_margin": self.clip_norm - self.input_clip_norm(dim), "step": 1.0 / self.scale}


def round_encoding(cfg: RunConfig, max_clients: int, clip_norm: float | None = None) -> FixedPointEncoding:
    """The encoding of one round, built the same way by the server and by every client, or their scales differ.

    S is the round's L2 bound: `clip_norm` as the round setup names it (a release's sensitivity), else user-dp's
    clip norm (the same L2 bound DP-FedAvg accounts for; with secure aggregation a client clips to it even without
    user-dp, because masking needs bounded inputs). `max_clients` is the number of clients asked this round, and
    the ring the run's `secagg.ring_bits`.
    """
    return FixedPointEncoding(clip_norm=cfg.user_dp.clip_norm if clip_norm is None else clip_norm,
                              max_clients=max_clients, ring_bits=cfg.secagg.ring_bits)


#: Ring of the evaluation sums: 64 bits, so that even a million evaluated devices sum exactly (every count field
#: decodes within far less than 1/2 of its integer value); the vector is small (a few fields plus one count per
#: catalog item), so the wider words cost little.
EVALUATION_RING_BITS = 64


def evaluation_encoding(max_clients: int, bound: float) -> FixedPointEncoding:
    """The encoding of one secure evaluation sum (`fedrec.shared.metrics.RankingMetrics.to_sums` vectors), built the
    same way by the server and every evaluated device.

    `bound` is the L2 bound of one device's vector (`RankingMetrics.sums_bound`); S = 2 * bound leaves room for
    the rounding margin, so a vector within `bound` is encoded as it is, never clipped (metrics are not clipped:
    a device whose vector exceeds the bound refuses instead).
    """
    return FixedPointEncoding(clip_norm=2.0 * bound, max_clients=max_clients, ring_bits=EVALUATION_RING_BITS)


def add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a + b in the ring (numpy unsigned arithmetic wraps modulo 2^b)."""
    return np.add(a, b, dtype=a.dtype)


def subtract(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a - b in the ring."""
    return np.subtract(a, b, dtype=a.dtype)
