"""Noise multipliers from a target epsilon: the smallest z whose planned releases stay within the target.

Why here and not Opacus' `get_noise_multiplier`: the same search has to serve both guarantees (DP-SGD on a
device, DP-FedAvg on the server), with the accountant that will later report and budget the spend, and over
the whole planned composition (several rounds), not one training run. The search is a bisection on z: epsilon
of a fixed composition falls as z grows. The result errs on the private side (epsilon(z) <= target) and is
within 1% of the smallest such z.

`fedrec.server.calibration.resolve_noise(cfg, population)` turns `record-target-epsilon` / `user-target-epsilon`
settings into the noise multipliers the rest of the code uses, before anything is trained; the target and its planned
composition stay in the config, so a report reader can see how z was chosen.
"""

from __future__ import annotations

from collections.abc import Callable

from dp_accounting import dp_event

from fedrec.shared.privacy.accountants import ACCOUNTANTS, make_accountant
from fedrec.shared.privacy.events import dpfedavg_event, dpsgd_event

Z_MIN, Z_MAX = 0.1, 500.0


#: The largest user-level delta used by default, whatever the population.
DEFAULT_USER_DELTA_MAX = 1e-6


def default_user_delta(population: int) -> float:
    """User-level delta = min(1e-6, 1 / (10 N)).

    Well below 1/N (a mechanism that publishes one random user's whole history meets delta = 1/N), and small in
    absolute terms for every population: 1/N^1.1, the earlier default, is 2.5e-4 at N = 1,892 and moves closer to
    1/N as N shrinks (N^-0.1 of it: 0.47 at N = 2,000, 0.79 at N = 10).
    """
    if population < 1:
        raise ValueError(f"population must be >= 1, found {population}")
    return min(DEFAULT_USER_DELTA_MAX, 1.0 / (10 * population))


def calibrate_noise(plan: Callable[[float], list[dp_event.DpEvent]], *, target_epsilon: float, delta: float,
                    accountant: str, tolerance: float = 0.01, adjacency: str = "add_or_remove_one") -> float:
    """The smallest z (to `tolerance`, relative) with epsilon(plan(z)) <= target_epsilon at `delta`.

    Two stages, because tight accountants (PLD, PRV) get very slow at small z: bracket and bisect with
    dp-accounting's RDP first (cheap), then bisect with `accountant` between half that z and a z it accepts.
    Raises ValueError if even z = Z_MAX cannot meet the target.
    """
    if target_epsilon <= 0:
        raise ValueError(f"target epsilon must be > 0, found {target_epsilon!r}")

    def fits(acc_name: str) -> Callable[[float], bool]:
        acc = make_accountant(acc_name, adjacency=adjacency)
        return lambda z: acc.epsilon(plan(z), delta=delta) <= target_epsilon

    # the cheap first stage is RDP; an RDP-method accountant (rdp-distributed reads events plain RDP cannot) is its
    # own first stage
    rdp_fits = fits(accountant if ACCOUNTANTS[accountant].method == "rdp" else "rdp")
    if not rdp_fits(Z_MAX) and not fits(accountant)(Z_MAX):
        raise ValueError(f"target epsilon {target_epsilon} at delta {delta} is out of reach: even z = {Z_MAX} "
                         f"exceeds it with {accountant}")
    lo, hi = _bracket(rdp_fits)
    z = _bisect(rdp_fits, lo, hi, tolerance)
    if ACCOUNTANTS[accountant].method == "rdp":
        return z
    # PLD: search on a 10x coarser grid (about 10x faster at small z). Its pessimistic estimate rounds privacy
    # losses up to a grid that contains the fine one, so it is never below the fine figure: a z it accepts, the
    # reporting accountant accepts too (checked below all the same).
    ok = fits(accountant) if accountant != "pld" else coarse_pld_fits(plan, target_epsilon, delta)
    hi = z
    while not ok(hi):  # the tight accountant should accept RDP's z; if not, search upwards
        hi = min(hi * 2, Z_MAX)
        if hi == Z_MAX:
            break
    z = _bisect(ok, max(Z_MIN, hi / 2), hi, tolerance)
    final = fits(accountant)
    while not final(z) and z < Z_MAX:
        z = min(z * (1 + tolerance), Z_MAX)
    return z


def coarse_pld_fits(plan: Callable[[float], list[dp_event.DpEvent]], target_epsilon: float,
                    delta: float) -> Callable[[float], bool]:
    """PLD with a 1e-3 value grid (pessimistic): the calibration search's fast upper bound of the 1e-4 figure."""
    acc = make_accountant("pld", settings={"value_discretization_interval": 1e-3})
    return lambda z: acc.epsilon(plan(z), delta=delta) <= target_epsilon


def _bracket(ok: Callable[[float], bool]) -> tuple[float, float]:
    """(lo, hi) with ok(hi) and (not ok(lo) or lo == Z_MIN), by doubling or halving from z = 1."""
    z = 1.0
    if ok(z):
        while z > Z_MIN and ok(z / 2):
            z /= 2
        return max(Z_MIN, z / 2), z
    while z < Z_MAX and not ok(z):
        z *= 2
    return z / 2, min(z, Z_MAX)


def _bisect(ok: Callable[[float], bool], lo: float, hi: float, tolerance: float) -> float:
    """Smallest accepted z in [lo, hi] to `tolerance` (relative); assumes ok(hi) and monotonicity."""
    if ok(lo):
        return lo
    while hi / lo > 1 + tolerance:
        mid = (lo * hi) ** 0.5
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi


def record_noise_for(*, target_epsilon: float, rounds: int, sample_rate: float, steps: int, delta: float,
                     accountant: str) -> float:
    """DP-SGD z such that `rounds` rounds of `steps` Poisson-sampled steps at rate q stay within the target."""
    return calibrate_noise(
        lambda z: [dpsgd_event(noise_multiplier=z, sample_rate=sample_rate, steps=steps)] * rounds,
        target_epsilon=target_epsilon, delta=delta, accountant=accountant)


def user_noise_for(*, target_epsilon: float, rounds: int, sample_rate: float | None, delta: float,
                   accountant: str = "pld") -> float:
    """DP-FedAvg z such that `rounds` releases (Poisson rate q, or no amplification if None) stay within target."""
    return calibrate_noise(
        lambda z: [dpfedavg_event(noise_multiplier=z, sample_rate=sample_rate)] * rounds,
        target_epsilon=target_epsilon, delta=delta, accountant=accountant)


def split_noise_for(*, target_epsilon: float, delta: float, shares: dict[str, float],
                    events_for: Callable[[dict[str, float]], list[dp_event.DpEvent]], accountant: str = "pld",
                    adjacency: str = "add_or_remove_one") -> dict[str, float]:
    """Noise multipliers for a run of several releases that together stay within one target epsilon.

    `shares` (name -> share > 0) split the budget as shares of 1/z^2: release i gets z_i = c / sqrt(s_i / sum s),
    and one scale c is calibrated (`calibrate_noise`) so that the whole composition, `events_for({name: z_i})`,
    meets the target. For non-sub-sampled Gaussian releases this is exact accounting of the split: their
    composition is the single Gaussian with 1/z^2 = sum 1/z_i^2 = 1/c^2. Sub-sampled ones (adapter rounds) enter
    the same composition through their own events.
    """
    live = {k: s for k, s in shares.items() if s > 0}
    if not live:
        raise ValueError("a budget split needs at least one share > 0")
    total = sum(live.values())

    def zs(c: float) -> dict[str, float]:
        return {k: c / (s / total) ** 0.5 for k, s in live.items()}

    c = calibrate_noise(lambda c: events_for(zs(c)), target_epsilon=target_epsilon, delta=delta,
                        accountant=accountant, adjacency=adjacency)
    return zs(c)
