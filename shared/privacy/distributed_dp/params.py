"""The public parameters of one distributed-DP round: what every client and the server must agree on.

The server picks them (usually with `calibration.calibrate`), sends them to the clients with the round's
instructions and writes them to the run's report / ledger; `to_json` / `from_json` round-trip them exactly
(floats are kept as Python floats, whose JSON form is their shortest round-tripping repr; the 128-bit seed is a
JSON integer, which Python reads back exactly). Nothing in here is secret: the rotation seed is public by design
(module `rotation`); the clients' noise and rounding randomness are not parameters.

Derived quantities (the sensitivities, the accounted variance, the DP event) are properties computed from the
fields, never stored, so a ledger cannot hold a sensitivity that disagrees with the encoding that was used.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from fedrec.shared.privacy.distributed_dp import rotation, rounding, samplers
from fedrec.shared.privacy.distributed_dp.accounting import DistributedDiscreteGaussianDpEvent, SkellamDpEvent

MECHANISMS = ("skellam", "dgauss")
RING_BITS = (32, 64)
#: gamma * S at most 2^40: integer coordinates stay far below 2^52 (exact in float64) and a sum of a million
#: clients far below 2^63; larger scales buy no precision that the DP noise would not drown anyway.
MAX_SCALED_CLIP = float(2**40)
FORMAT_VERSION = 1


class ParameterError(ValueError):
    """A distributed-DP parameter is missing, of the wrong type or out of range; the message names it."""


def _real(name: str, value: Any, *, low: float, high: float = math.inf, low_open: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ParameterError(f"{name}: expected a number, found {value!r}")
    v = float(value)
    ok = math.isfinite(v) and (v > low if low_open else v >= low) and v <= high
    if not ok:
        lo = f"> {low:g}" if low_open else f">= {low:g}"
        raise ParameterError(f"{name}: expected a finite number {lo}" + (f" and <= {high:.6g}" if high < math.inf
                                                                         else "") + f", found {value!r}")
    return v


def _int(name: str, value: Any, *, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ParameterError(f"{name}: expected an integer, found {value!r}")
    v = int(value)
    if v < low or (high is not None and v > high):
        raise ParameterError(f"{name}: expected an integer >= {low}" + (f" and <= {high}" if high is not None else "")
                             + f", found {value!r}")
    return v


@dataclass(frozen=True)
class DistributedDpParams:
    """One round's public distributed-DP parameters (all variances in integer units, after scaling by `scale`).

    Attributes:
        mechanism: "skellam" (default; exact noise over any survivor set) or "dgauss" (discrete Gaussian shares).
        clip_norm: S, the L2 bound of each client's flat update (float units).
        dim: d, the number of coordinates of the update.
        padded_dim: the smallest power of two >= d (the rotated vector's length and the SecAgg vector length).
        scale: gamma, integer units per float unit; S maps to gamma S.
        ring_bits: b, the SecAgg ring is Z_2^b (32 or 64).
        client_variance: each client's noise share per coordinate (Skellam variance, or the discrete Gaussian's
            sigma^2 parameter).
        min_survivors: t, the SecAgg threshold: the guarantee counts the noise of t shares only.
        max_clients: n, the most clients whose encodings can be summed (the wrap-around calibration assumes n).
        rotation_seed: the public per-round seed of the Hadamard signs, an int in [0, 2^128).
        beta: conditional rounding parameter in [0, 1) (`rounding`).
    """

    mechanism: str
    clip_norm: float
    dim: int
    padded_dim: int
    scale: float
    ring_bits: int
    client_variance: float
    min_survivors: int
    max_clients: int
    rotation_seed: int
    beta: float = rounding.DEFAULT_BETA

    def __post_init__(self) -> None:
        if self.mechanism not in MECHANISMS:
            raise ParameterError(f"mechanism: expected one of {MECHANISMS}, found {self.mechanism!r}")
        set_ = object.__setattr__
        set_(self, "clip_norm", _real("clip_norm", self.clip_norm, low=0.0))
        set_(self, "dim", _int("dim", self.dim, low=1, high=rotation.MAX_PADDED_DIM))
        set_(self, "padded_dim", _int("padded_dim", self.padded_dim, low=1))
        expected = rotation.padded_dim(self.dim)
        if self.padded_dim != expected:
            raise ParameterError(f"padded_dim: expected {expected} (the power of two >= dim {self.dim}), "
                                 f"found {self.padded_dim}")
        set_(self, "scale", _real("scale", self.scale, low=0.0))
        if self.scale * self.clip_norm > MAX_SCALED_CLIP:
            raise ParameterError(f"scale: scale * clip_norm must be <= {MAX_SCALED_CLIP:.6g}, found "
                                 f"{self.scale!r} * {self.clip_norm!r} = {self.scale * self.clip_norm:.6g}")
        if isinstance(self.ring_bits, bool) or self.ring_bits not in RING_BITS:
            raise ParameterError(f"ring_bits: expected one of {RING_BITS}, found {self.ring_bits!r}")
        set_(self, "client_variance", _real("client_variance", self.client_variance, low=0.0, low_open=False,
                                            high=samplers.MAX_VARIANCE))
        set_(self, "min_survivors", _int("min_survivors", self.min_survivors, low=1))
        set_(self, "max_clients", _int("max_clients", self.max_clients, low=1))
        if self.max_clients < self.min_survivors:
            raise ParameterError(f"max_clients: expected an integer >= min_survivors ({self.min_survivors}), found "
                                 f"{self.max_clients!r}")
        set_(self, "rotation_seed", _int("rotation_seed", self.rotation_seed, low=0, high=2**rotation.SEED_BITS - 1))
        set_(self, "beta", _real("beta", self.beta, low=0.0, low_open=False, high=math.nextafter(1.0, 0.0)))
        if self.max_clients * (self.l2_sensitivity + 64 * math.sqrt(self.client_variance) + 64) >= 2.0**62:
            raise ParameterError(f"max_clients: {self.max_clients} clients at scale {self.scale!r} could overflow "
                                 f"int64 arithmetic")

    # ---- derived -------------------------------------------------------------------------------------------

    @property
    def scaled_clip(self) -> float:
        """gamma S: the clip norm in integer units (before rounding)."""
        return self.scale * self.clip_norm

    @property
    def l2_sensitivity(self) -> float:
        """Delta_2: the conditional rounding bound every client's integer vector is held to (`rounding.l2_bound`)."""
        return rounding.l2_bound(self.scaled_clip, self.padded_dim, self.beta)

    @property
    def l1_sensitivity(self) -> float:
        """Delta_1 = min(sqrt(padded_dim) Delta_2, Delta_2^2)."""
        return rounding.l1_bound(self.l2_sensitivity, self.padded_dim)

    @property
    def accounted_variance(self) -> float:
        """t * client_variance: the noise variance per coordinate the guarantee relies on (integer units)."""
        return self.min_survivors * self.client_variance

    @property
    def noise_multiplier(self) -> float:
        """sqrt(accounted variance) / (gamma S): the central-DP noise multiplier z this round corresponds to."""
        return math.sqrt(self.accounted_variance) / self.scaled_clip

    @property
    def ring_dtype(self) -> np.dtype:
        return np.dtype(np.uint32 if self.ring_bits == 32 else np.uint64)

    @property
    def envelope(self) -> int:
        """2^(b-2): a decoded coordinate at or beyond it means a probable wrap-around (`encoding.decode_sum`)."""
        return 2 ** (self.ring_bits - 2)

    def dp_event(self) -> SkellamDpEvent | DistributedDiscreteGaussianDpEvent:
        """The DP event of one release under these parameters (t shares of noise; REPLACE_SPECIAL relation)."""
        if self.client_variance <= 0:
            raise ParameterError("client_variance: 0 means no noise, which is not a DP release")
        if self.mechanism == "skellam":
            return SkellamDpEvent(self.l1_sensitivity, self.l2_sensitivity, self.accounted_variance)
        return DistributedDiscreteGaussianDpEvent(self.l1_sensitivity, self.l2_sensitivity, self.client_variance,
                                                  self.min_survivors, self.padded_dim)

    # ---- JSON ----------------------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"version": FORMAT_VERSION}
        for f in fields(self):
            out[f.name] = getattr(self, f.name)
        return out

    @classmethod
    def from_json(cls, obj: Any) -> DistributedDpParams:
        """Validates like the constructor; also refuses unknown, missing or mistyped members, naming them."""
        if not isinstance(obj, dict):
            raise ParameterError(f"expected a JSON object, found {type(obj).__name__}")
        version = obj.get("version")
        if version != FORMAT_VERSION:
            raise ParameterError(f"version: expected {FORMAT_VERSION}, found {version!r}")
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(obj) - set(names) - {"version"})
        missing = [n for n in names if n not in obj]
        if unknown:
            raise ParameterError(f"unknown member(s) {unknown}")
        if missing:
            raise ParameterError(f"missing member(s) {missing}")
        for name in ("dim", "padded_dim", "ring_bits", "min_survivors", "max_clients", "rotation_seed"):
            if isinstance(obj[name], bool) or not isinstance(obj[name], int):
                raise ParameterError(f"{name}: expected an integer, found {obj[name]!r}")
        return cls(**{n: obj[n] for n in names})
