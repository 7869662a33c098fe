"""Choosing the scale gamma and each client's noise share: same noise as central DP-FedAvg, no wrap-around.

Target noise. Central DP-FedAvg adds N(0, (z S)^2) per coordinate to the sum. Here the sum over the survivors
must carry at least that much discrete noise, in integer units (gamma z S)^2 (TFF's `DistributedDpSumFactory` does
the same: the noise multiplier is relative to the clip norm before rounding). Conservatively, each client's share is
calibrated so that the **t** survivors the SecAgg threshold guarantees already reach it:

    client_variance = (gamma z S)^2 / t.

More survivors only add noise; fewer than t and SecAgg aborts the round (and `encoding.decode_sum` refuses).
To also tolerate c clients colluding with the server (who can subtract their own shares), pass t - c.

Scale. Larger gamma means less rounding error and less L2 inflation, but a larger integer sum. gamma is the
largest value such that (1) every coordinate of the true integer sum of up to n = max_clients encodings stays
inside the envelope |sum_j| < A = 2^(b-2) except with probability `wrap_probability` **per round** (union bound
over the padded_dim coordinates), (2) each client's noise variance stays within `samplers.MAX_VARIANCE`, and (3)
gamma S <= `params.MAX_SCALED_CLIP`. The envelope is half the signed range so that `decode_sum` can detect a
wrap-around (see `encoding`).

Tail bound (per coordinate j). sum_j = gamma (H D sum_i x_i)_j + R_j + N_j, with
* the rotated signal: a Rademacher sum with coefficients (sum_i x_i)_k / sqrt(d'), ||sum_i x_i|| <= n S, so
  sub-Gaussian with variance proxy sigma_s^2 = (n gamma S)^2 / d' (Hoeffding's lemma; this assumes the updates do
  not depend on the round's public signs);
* rounding: |R_j| < n, deterministically;
* the noise: Skellam with variance V = n client_variance, whose moment generating function is exactly
  E exp(s N) = exp(V (cosh s - 1)) (for the discrete Gaussian: <= exp(s^2 V / 2), Canonne, Kamath & Steinke 2020).
By Chernoff, P(|sum_j| >= A) <= 2 min_{s>0} exp(s^2 sigma_s^2 / 2 + V (cosh s - 1) - s (A - n)), minimised exactly
(the exponent is convex; its derivative's root is found by Brent's method). This replaces TFF's heuristic
(`_heuristic_scale_factor`, k standard deviations of an assumed sub-Gaussian aggregate, `modclip_prob` 1e-4) by a
bound that holds for the Skellam's heavier (sub-exponential) tails.

Reported: epsilon after `rounds` releases (Skellam RDP accountant, REPLACE_SPECIAL relation) next to the central
Gaussian mechanism's epsilon for the same z; the per-coordinate and per-round wrap-around probability bounds; the
L2 inflation Delta_2 / (gamma S) - 1; and the extra noise from rounding: each client's randomized rounding adds
variance <= 1/4 per coordinate to its noise share's client_variance, a relative standard deviation increase of at
most sqrt(1 + 1/(4 client_variance)) - 1, whatever the number of survivors.

`calibrate_for_epsilon` finds the smallest z (to a relative tolerance) whose calibrated rounds stay within a
target epsilon: a bracket by doubling / halving, then bisection (epsilon falls as z grows).
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from typing import Any

from dp_accounting import dp_event
from scipy import optimize

from fedrec.shared.privacy.distributed_dp import accounting, rotation, rounding, samplers
from fedrec.shared.privacy.distributed_dp.params import MAX_SCALED_CLIP, DistributedDpParams, ParameterError, _real

TAIL_BOUND = ("Chernoff: Hoeffding sub-Gaussian proxy (n gamma S)^2/d' for the rotated signal, |rounding| < n, exact "
              "Skellam MGF exp(V (cosh s - 1)) (discrete Gaussian: exp(s^2 V/2)) for the noise; union bound over d' "
              "coordinates for the per-round figure; envelope 2^(b-2)")
Z_MIN, Z_MAX = 0.05, 1000.0


class CalibrationError(ValueError):
    """No parameters meet the request (ring too small for the clients and noise, or epsilon out of reach)."""


def log_wrap_probability(*, signal_proxy: float, noise_variance: float, threshold: float, mechanism: str) -> float:
    """log of the Chernoff bound on P(|signal + noise| >= threshold) for one coordinate (module docstring).

    `signal_proxy`: sub-Gaussian variance proxy of the signal; `noise_variance`: V of the summed noise;
    `threshold`: A - n (the envelope less the deterministic rounding bound). Returns -inf if both are zero.
    """
    if threshold <= 0:
        return 0.0
    s2, v, a = float(signal_proxy), float(noise_variance), float(threshold)
    if s2 == 0 and v == 0:
        return -math.inf
    skellam = mechanism == "skellam"

    def exponent(s: float) -> float:
        noise = v * (math.cosh(s) - 1.0) if skellam else s * s * v / 2.0
        return s * s * s2 / 2.0 + noise - s * a

    def slope(s: float) -> float:
        noise = v * math.sinh(s) if skellam else s * v
        return s * s2 + noise - a

    hi = 700.0  # cosh(700) is still finite; an optimum beyond it would need a vanishing noise and signal
    if s2 > 0:
        hi = a / s2
    if v > 0:
        hi = min(hi, math.asinh(a / v) if skellam else a / v)
    s_star = optimize.brentq(slope, 0.0, hi, xtol=1e-300, rtol=1e-14, maxiter=200) if slope(hi) > 0 else hi
    return min(0.0, math.log(2.0) + exponent(s_star))


@dataclass(frozen=True)
class Calibration:
    """The chosen parameters and what they give (see the module docstring for each figure's meaning).

    The wrap-around probabilities are upper bounds (they underflow to 0.0 below ~1e-308; the log10 figure does not).
    `binding_constraint`: which limit set gamma: "wrap" (the ring), "sampler" (`samplers.MAX_VARIANCE`) or
    "float" (`params.MAX_SCALED_CLIP`).
    """

    params: DistributedDpParams
    noise_multiplier: float
    rounds: int
    delta: float
    epsilon: float
    central_epsilon: float
    wrap_probability_per_coordinate: float
    wrap_probability_per_round: float
    wrap_probability_target: float
    log10_wrap_probability_per_round: float
    binding_constraint: str
    l2_inflation: float
    rounding_noise_increase: float
    tail_bound: str = TAIL_BOUND

    @property
    def event(self) -> dp_event.DpEvent:
        """One round's DpEvent (integer units), for the ledger."""
        return self.params.dp_event()

    def to_json(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "params"}
        out["params"] = self.params.to_json()
        out["event"] = accounting.event_to_json(self.event)
        return out


def _check_common(clip_norm: float, dim: int, min_survivors: int, max_clients: int, ring_bits: int,
                  wrap_probability: float, rounds: int, delta: float) -> None:
    if not (isinstance(wrap_probability, int | float) and 0 < wrap_probability < 1):
        raise ParameterError(f"wrap_probability: expected a number in (0, 1), found {wrap_probability!r}")
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ParameterError(f"rounds: expected an integer >= 1, found {rounds!r}")
    if not (isinstance(delta, int | float) and 0 < delta < 1):
        raise ParameterError(f"delta: expected a number in (0, 1), found {delta!r}")
    if isinstance(max_clients, int) and isinstance(ring_bits, int) and ring_bits in (32, 64) and \
            max_clients >= 2 ** (ring_bits - 2):
        raise ParameterError(f"max_clients: {max_clients} clients cannot fit a {ring_bits}-bit ring")


def calibrate(*, clip_norm: float, dim: int, noise_multiplier: float, min_survivors: int, max_clients: int,
              ring_bits: int = 32, wrap_probability: float = 1e-9, rounds: int = 1, delta: float = 1e-5,
              mechanism: str = "skellam", beta: float = rounding.DEFAULT_BETA,
              rotation_seed: int | None = None) -> Calibration:
    """Parameters for one round that carry central noise z S over t = min_survivors survivors (module docstring).

    `wrap_probability` is per round (all coordinates together). `rounds` and `delta` only affect the reported
    epsilon. `rotation_seed` defaults to a fresh `secrets.randbits(128)` (draw a new one every round).
    """
    _check_common(clip_norm, dim, min_survivors, max_clients, ring_bits, wrap_probability, rounds, delta)
    if isinstance(noise_multiplier, bool) or not isinstance(noise_multiplier, int | float) or not (
            math.isfinite(noise_multiplier) and noise_multiplier > 0):
        raise ParameterError(f"noise_multiplier: expected a finite number > 0, found {noise_multiplier!r}")
    seed = secrets.randbits(rotation.SEED_BITS) if rotation_seed is None else rotation_seed
    clip = _real("clip_norm", clip_norm, low=0.0)
    try:
        pad = rotation.padded_dim(dim)
    except ValueError as e:
        raise ParameterError(f"dim: {e}") from None
    # validates every other argument the way the params constructor does, with a harmless scale and no noise
    probe = DistributedDpParams(mechanism, clip, dim, pad, 1.0 / clip, ring_bits, 0.0, min_survivors, max_clients,
                                seed, beta)
    s, z, t, n, d_pad = probe.clip_norm, float(noise_multiplier), probe.min_survivors, probe.max_clients, \
        probe.padded_dim
    threshold = 2.0 ** (ring_bits - 2) - n
    log_target = math.log(wrap_probability)

    def log_round(gamma: float) -> float:
        signal = (n * gamma * s) ** 2 / d_pad
        noise = n * (gamma * z * s) ** 2 / t
        return math.log(d_pad) + log_wrap_probability(signal_proxy=signal, noise_variance=noise, threshold=threshold,
                                                      mechanism=mechanism)

    caps = {"float": MAX_SCALED_CLIP / s, "sampler": math.sqrt(samplers.MAX_VARIANCE * t) / (z * s) * (1 - 1e-12)}
    gamma_hi = min(caps.values())
    if gamma_hi * s < 1.0:
        raise CalibrationError(f"noise multiplier {z} with t = {t} needs a per-client variance above the sampler "
                               f"limit {samplers.MAX_VARIANCE:.6g} even at scale gamma S = 1")
    if log_round(gamma_hi) <= log_target:
        gamma, binding = gamma_hi, min(caps, key=lambda k: caps[k])
    else:
        lo = 1.0 / s  # gamma S = 1: one integer unit per clip norm
        if log_round(lo) > log_target:
            raise CalibrationError(
                f"a {ring_bits}-bit ring cannot hold the sum of {n} clients with noise multiplier {z} within the "
                f"wrap-around target {wrap_probability} even at scale gamma S = 1: use ring_bits=64, fewer clients "
                f"or a looser target")
        hi = gamma_hi
        for _ in range(200):  # bisection on log(gamma); invariant: lo meets the target, hi does not
            mid = math.sqrt(lo * hi)
            if log_round(mid) <= log_target:
                lo = mid
            else:
                hi = mid
            if hi / lo - 1 < 1e-12:
                break
        gamma, binding = lo, "wrap"
    target_variance = (gamma * z * s) ** 2
    client_variance = min(target_variance / t * (1 + 1e-12), samplers.MAX_VARIANCE)
    params = DistributedDpParams(mechanism, s, probe.dim, d_pad, gamma, ring_bits, client_variance, t, n, seed, beta)
    eps = accounting.epsilon([dp_event.SelfComposedDpEvent(params.dp_event(), rounds)], delta=delta)
    central = accounting.epsilon([dp_event.SelfComposedDpEvent(dp_event.GaussianDpEvent(z), rounds)], delta=delta)
    log_p_round = log_round(gamma)
    return Calibration(
        params=params, noise_multiplier=z, rounds=rounds, delta=float(delta), epsilon=eps, central_epsilon=central,
        wrap_probability_per_coordinate=math.exp(log_p_round - math.log(d_pad)),
        wrap_probability_per_round=math.exp(log_p_round), wrap_probability_target=float(wrap_probability),
        log10_wrap_probability_per_round=log_p_round / math.log(10),
        binding_constraint=binding, l2_inflation=params.l2_sensitivity / params.scaled_clip - 1.0,
        rounding_noise_increase=math.sqrt(1.0 + 0.25 / client_variance) - 1.0)


def calibrate_for_epsilon(target_epsilon: float, delta: float, rounds: int, *, clip_norm: float, dim: int,
                          min_survivors: int, max_clients: int, ring_bits: int = 32, wrap_probability: float = 1e-9,
                          mechanism: str = "skellam", beta: float = rounding.DEFAULT_BETA,
                          rotation_seed: int | None = None, tolerance: float = 1e-3) -> Calibration:
    """The calibration with the smallest noise multiplier z (within `tolerance`, relative) whose `rounds` releases
    have epsilon <= target_epsilon at `delta` under the Skellam (or DDG) RDP accountant.

    Bracket: from z = 1, double until epsilon <= target (up to Z_MAX) or halve while it is (down to Z_MIN); then
    bisect in log z. The returned calibration always meets the target (epsilon <= target_epsilon).
    """
    if isinstance(target_epsilon, bool) or not isinstance(target_epsilon, int | float) or not (
            math.isfinite(target_epsilon) and target_epsilon > 0):
        raise ParameterError(f"target_epsilon: expected a finite number > 0, found {target_epsilon!r}")
    seed = secrets.randbits(rotation.SEED_BITS) if rotation_seed is None else rotation_seed

    def run(z: float) -> Calibration:
        return calibrate(clip_norm=clip_norm, dim=dim, noise_multiplier=z, min_survivors=min_survivors,
                         max_clients=max_clients, ring_bits=ring_bits, wrap_probability=wrap_probability,
                         rounds=rounds, delta=delta, mechanism=mechanism, beta=beta, rotation_seed=seed)

    def ok(c: Calibration) -> bool:
        return c.epsilon <= target_epsilon

    z = 1.0
    best = run(z)
    if ok(best):
        lo = z
        while True:  # halve while the target is still met
            if lo / 2 < Z_MIN:
                return best
            trial = run(lo / 2)
            if not ok(trial):
                lo, hi = lo / 2, lo
                break
            lo, best = lo / 2, trial
    else:
        hi = z
        while True:
            if hi * 2 > Z_MAX:
                last = run(Z_MAX)
                if not ok(last):
                    raise CalibrationError(f"target epsilon {target_epsilon} at delta {delta} over {rounds} rounds is "
                                           f"out of reach: z = {Z_MAX} gives epsilon {last.epsilon:.6g}")
                lo, hi, best = hi, Z_MAX, last
                break
            trial = run(hi * 2)
            if ok(trial):
                lo, hi, best = hi, hi * 2, trial
                break
            hi *= 2
    while hi / lo - 1 > tolerance:  # invariant: run(hi) meets the target (it is `best`), run(lo) does not
        mid = math.sqrt(lo * hi)
        trial = run(mid)
        if ok(trial):
            hi, best = mid, trial
        else:
            lo = mid
    return best
