"""Integer noise for distributed DP: Skellam (the primary mechanism) and the discrete Gaussian (the alternative).

Why integer noise: secure aggregation sums ring elements, so each client must add its share of the noise *before*
masking, in the integer domain. Continuous Gaussian noise cannot be added there, and a float sampler rounded to
integers would not match any analysed mechanism.

Why Skellam first (Agarwal, Kairouz & Liu, NeurIPS 2021, "The Skellam Mechanism for Differentially Private
Federated Learning", arXiv:2110.04995): Sk(V), the difference of two independent Poisson(V/2) variables, has
mean 0 and variance V, and a sum of independent Skellams is exactly Skellam: Sk(V1) + Sk(V2) = Sk(V1 + V2). So
whatever subset of clients survives a SecAgg round, the noise in the unmasked sum is *exactly* Sk(sum of their
variances), and the accountant's Skellam bound applies to it without approximation. The discrete Gaussian is not
closed under summation: the sum of n discrete Gaussians is only close to one, which is what the extra tau term of
the distributed discrete Gaussian bound pays for (Kairouz, Liu & Steinke, ICML 2021, arXiv:2102.06387).

Randomness: both samplers draw from a `numpy.random.Generator`. NumPy's bit generators (PCG64, Philox, ...) are
*not* cryptographically secure PRNGs: their output is predictable from enough of it, and their state can be
recovered. The calling code must therefore create a fresh generator per client per round from the OS CSPRNG
(`secure_generator()`, seeded from `secrets`), keep it on the device, and never reuse or reveal it; the noise
only protects the update if the server cannot predict it.

Floating point: numpy's Poisson sampler for large rates (PTRS, Hörmann 1993) and the acceptance test of the
discrete Gaussian below compute in double precision, so neither is bit-exact (unlike the rational-arithmetic
sampler of Canonne, Kamath & Steinke 2020). `MAX_VARIANCE` keeps the Poisson rate at or below 2^32, where the
log-gamma terms of PTRS are about 1e11 and their rounding error about 1e-5 in the log acceptance ratio, i.e.
relative distortions of the probability mass function of order 1e-5. The DP analysis assumes exact samplers; this
residual is the same kind TFF's `tf.random.stateless_poisson` has, and it is documented in docs/distributed-dp.md.
"""

from __future__ import annotations

import math
import secrets

import numpy as np

#: The largest per-coordinate variance either sampler accepts (Poisson rate V/2 <= 2^32): see the module docstring.
MAX_VARIANCE = float(2**33)
#: Discrete Gaussian rejection sampling: draws per round of the vectorised loop, as a multiple of what is missing.
_OVERSAMPLE = 1.6
_MAX_ROUNDS = 200


def secure_generator() -> np.random.Generator:
    """A fresh PCG64 generator seeded with 256 bits from the OS CSPRNG (`secrets`): one per client per round."""
    return np.random.Generator(np.random.PCG64(secrets.randbits(256)))


def _check(variance: float, size: int | tuple[int, ...], name: str) -> None:
    if isinstance(variance, bool) or not isinstance(variance, int | float | np.floating | np.integer):
        raise TypeError(f"{name} must be a number, found {variance!r}")
    if not (math.isfinite(variance) and 0 <= variance <= MAX_VARIANCE):
        raise ValueError(f"{name} must be finite and in [0, {MAX_VARIANCE:.6g}], found {variance!r}")
    if isinstance(size, int) and size < 0:
        raise ValueError(f"size must be >= 0, found {size}")


def skellam(rng: np.random.Generator, variance: float, size: int | tuple[int, ...]) -> np.ndarray:
    """Symmetric Skellam noise Sk(variance): Poisson(variance/2) - Poisson(variance/2), as int64.

    Mean 0, variance exactly `variance` per coordinate (Agarwal et al. 2021, Definition of the Skellam
    distribution with mu_1 = mu_2 = variance/2). Independent coordinates. `variance == 0` gives zeros.
    """
    _check(variance, size, "variance")
    if variance == 0:
        return np.zeros(size, dtype=np.int64)
    lam = float(variance) / 2.0
    return rng.poisson(lam, size).astype(np.int64) - rng.poisson(lam, size).astype(np.int64)


def discrete_laplace(rng: np.random.Generator, scale: float, size: int) -> np.ndarray:
    """P(Y = y) proportional to exp(-|y| / scale) on the integers, as the difference of two geometrics.

    numpy's geometric counts trials (support 1, 2, ...); minus one it counts failures, P(G = k) = (1-p) p^k with
    p = exp(-1/scale) here, and G1 - G2 is discrete Laplace (Canonne, Kamath & Steinke 2020, Algorithm 2 samples
    the same law differently).
    """
    p_success = -math.expm1(-1.0 / scale)  # 1 - exp(-1/scale), accurate for large scales
    return rng.geometric(p_success, size).astype(np.int64) - rng.geometric(p_success, size).astype(np.int64)


def discrete_gaussian(rng: np.random.Generator, sigma2: float, size: int) -> np.ndarray:
    """Discrete Gaussian N_Z(0, sigma2): P(x) proportional to exp(-x^2 / (2 sigma2)) on the integers, as int64.

    Canonne, Kamath & Steinke 2020 ("The Discrete Gaussian for Differential Privacy", NeurIPS 2020, Algorithm 3):
    draw Y from the discrete Laplace with scale t = floor(sigma) + 1 and accept it with probability
    exp(-(|Y| - sigma^2/t)^2 / (2 sigma^2)); the accepted Y are exactly N_Z(0, sigma^2) distributed. Vectorised:
    every round draws a batch for all the coordinates still missing. The acceptance test is done in floating
    point, not with the paper's exact Bernoulli(exp(-x)) sampler (see the module docstring).

    Note `sigma2` is the *parameter*; the variance of N_Z(0, sigma2) is slightly below it: relatively by 2e-7 at
    sigma2 = 1, 1e-15 at 2 and 2e-32 at 4 (computed from the PMF), so for the scales used here it is sigma2.
    """
    _check(sigma2, size, "sigma2")
    if not isinstance(size, int | np.integer):
        raise TypeError(f"size must be an int, found {size!r}")
    size = int(size)
    if sigma2 == 0:
        return np.zeros(size, dtype=np.int64)
    sigma2 = float(sigma2)
    t = math.floor(math.sqrt(sigma2)) + 1
    out = np.empty(size, dtype=np.int64)
    filled = 0
    for _ in range(_MAX_ROUNDS):
        missing = size - filled
        if missing == 0:
            return out
        n = int(missing * _OVERSAMPLE) + 16
        y = discrete_laplace(rng, t, n)
        accept = rng.random(n) < np.exp(-np.square(np.abs(y) - sigma2 / t) / (2.0 * sigma2))
        kept = y[accept][:missing]
        out[filled:filled + kept.size] = kept
        filled += kept.size
    if filled < size:  # acceptance probability is >= ~0.3 for every sigma (CKS 2020): this cannot happen
        raise RuntimeError(f"discrete Gaussian sampler filled only {filled} of {size} in {_MAX_ROUNDS} rounds")
    return out


def discrete_gaussian_logpmf(x: np.ndarray, sigma2: float) -> np.ndarray:
    """log P(x) of N_Z(0, sigma2), normalised by a direct sum over |x| <= 40 sigma + 40 (the reference PMF)."""
    sigma = math.sqrt(sigma2)
    half = int(40 * sigma) + 40
    support = np.arange(-half, half + 1, dtype=np.float64)
    log_norm = float(np.logaddexp.reduce(-np.square(support) / (2 * sigma2)))
    return -np.square(np.asarray(x, dtype=np.float64)) / (2 * sigma2) - log_norm
