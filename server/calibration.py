"""Turn target epsilons into noise multipliers, once, before a run starts (public settings only).

`record_dp.target_epsilon` (device, DP-SGD) and `user_dp.target_epsilon` (server, DP-FedAvg) are resolved here
into `record_dp.noise_multiplier` / `user_dp.noise_multiplier` with the accountant that will budget and report the
spend, over the planned composition: `record_dp.target_rounds` rounds of K-slot DP-SGD for a device, `run.rounds`
releases for the run. Unless a budget is set explicitly, the target also becomes the budget, so a device that is
sampled more often than planned declines instead of exceeding it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from dp_accounting import dp_event

from fedrec.server.distributed_release import ACCOUNTANT, calibration
from fedrec.shared.config import RunConfig
from fedrec.shared.config.hybrid import parse_shares
from fedrec.shared.errors import ConfigError
from fedrec.shared.privacy.calibrate import calibrate_noise, default_user_delta, record_noise_for, split_noise_for
from fedrec.shared.privacy.distributed_dp.rotation import MAX_PADDED_DIM
from fedrec.shared.privacy.events import dpfedavg_event, dpsgd_event
from fedrec.shared.train.dp_sgd import OPACUS_ACCOUNTANTS, plan_round

log = logging.getLogger("fedrec.server")


def resolve_noise(cfg: RunConfig, population: int) -> RunConfig:
    """`cfg` with noise multipliers (and default budgets) derived from its target epsilons, if any.

    With releases (`hybrid.releases`) the target covers them too: `hybrid.shares` split it between the releases and
    the adapter rounds (`split_noise_for`), and the releases' multipliers go to `hybrid.noise_multipliers`. Under
    user-level DP the composition is the run's user-level ledger; with record-level DP alone it is one device's
    ledger: the releases it contributes to, each with its own local noise (`record_cost`), plus
    `record_dp.target_rounds` rounds of DP-SGD.
    """
    changes: dict[str, object] = {}
    kinds = cfg.hybrid.kinds
    if cfg.user_dp.enabled and cfg.user_dp.target_epsilon > 0:
        q = cfg.run.clients_sampled(population) / population if cfg.run.client_sampling == "poisson" else None
        delta = cfg.user_dp.delta or default_user_delta(population)
        user_event, accountant = _user_level_plan(cfg, population, delta)
        if kinds:
            zs = split_noise_for(target_epsilon=cfg.user_dp.target_epsilon, delta=delta,
                                 shares=_shares(cfg, kinds, "user_dp.target_epsilon"),
                                 events_for=lambda z: [user_event(z[k], None) for k in kinds]
                                 + ([user_event(z["adapter"], q)] * cfg.run.rounds if "adapter" in z else []),
                                 **accountant)
            changes["hybrid.noise_multipliers"] = _pairs({k: zs[k] for k in kinds})
            if "adapter" in zs:
                changes["user_dp.noise_multiplier"] = zs["adapter"]
            elif cfg.run.rounds > 0:  # the whole budget goes to the releases: no adapter round can run
                log.warning("calibration: hybrid.shares gives the adapter no share of user_dp.target_epsilon, so "
                            "no adapter round runs (run.rounds %d -> 0); give 'adapter' a share to train it",
                            cfg.run.rounds)
                changes["run.rounds"] = 0
        else:
            changes["user_dp.noise_multiplier"] = calibrate_noise(
                lambda z: [user_event(z, q)] * cfg.run.rounds, target_epsilon=cfg.user_dp.target_epsilon,
                delta=delta, **accountant)
        if cfg.user_dp.epsilon_max <= 0:
            changes["user_dp.epsilon_max"] = cfg.user_dp.target_epsilon
    if cfg.record_dp.enabled and cfg.record_dp.target_epsilon > 0:
        plan = plan_round(cfg)
        accountant = OPACUS_ACCOUNTANTS[cfg.record_dp.accountant]
        if kinds and not cfg.user_dp.enabled:
            zs = split_noise_for(target_epsilon=cfg.record_dp.target_epsilon, delta=cfg.record_dp.delta,
                                 shares=_shares(cfg, kinds, "record_dp.target_epsilon",
                                                rounds=cfg.record_dp.target_rounds),
                                 events_for=lambda z: [record_cost(z[k]) for k in kinds]
                                 + ([dpsgd_event(noise_multiplier=z["adapter"], sample_rate=plan.sample_rate,
                                                 steps=plan.steps)] * cfg.record_dp.target_rounds
                                    if "adapter" in z else []), accountant=accountant)
            changes["hybrid.noise_multipliers"] = _pairs({k: zs[k] for k in kinds})
            if "adapter" in zs:
                changes["record_dp.noise_multiplier"] = zs["adapter"]
            elif cfg.run.rounds > 0:
                log.warning("calibration: hybrid.shares gives the adapter no share of record_dp.target_epsilon, "
                            "so no adapter round runs (run.rounds %d -> 0)", cfg.run.rounds)
                changes["run.rounds"] = 0
        else:
            changes["record_dp.noise_multiplier"] = record_noise_for(
                target_epsilon=cfg.record_dp.target_epsilon, rounds=cfg.record_dp.target_rounds,
                sample_rate=plan.sample_rate, steps=plan.steps, delta=cfg.record_dp.delta, accountant=accountant)
        if cfg.record_dp.epsilon_max <= 0:
            changes["record_dp.epsilon_max"] = cfg.record_dp.target_epsilon
    return cfg.updated(changes, source="target epsilon calibration") if changes else cfg


def _user_level_plan(cfg: RunConfig, population: int, delta: float
                     ) -> tuple[Callable[[float, float | None], dp_event.DpEvent], dict[str, str]]:
    """(event of one user-level release at noise z and sampling rate q, the accountant's name and adjacency).

    Server noise: DP-FedAvg's Gaussian (amplified by Poisson sampling), PLD. Distributed noise: the Skellam event
    the run will record, calibrated as `server.distributed_release` does but at the largest vector the encoding
    allows (2^24 coordinates: larger sensitivities, so the plan's epsilon is never below the run's for any actual
    size), never amplified (the server knows who took part), read by `rdp-distributed` under zero-out adjacency.
    """
    if cfg.user_dp.noise != "distributed":
        return (lambda z, q: dpfedavg_event(noise_multiplier=z, sample_rate=q)), {"accountant": "pld"}

    def skellam(z: float, _q: float | None) -> dp_event.DpEvent:
        return calibration(clip_norm=1.0, dim=MAX_PADDED_DIM, noise_multiplier=z, population=population,
                           ring_bits=cfg.secagg.ring_bits, delta=delta).event

    return skellam, {"accountant": ACCOUNTANT, "adjacency": "replace_special"}


def record_cost(noise_multiplier: float) -> dp_event.DpEvent:
    """What one release costs a device under record-level DP alone: the device adds Gaussian noise of std
    z x `StatisticSpec.record_sensitivity` (the L2 change one example slot can make to its one-item-per-slot
    contribution) before the contribution leaves it (`client.statistics`), so the release is one Gaussian event
    with multiplier z."""
    return dp_event.GaussianDpEvent(noise_multiplier)


def release_noise(cfg: RunConfig) -> dict[str, float]:
    """Each release's noise multiplier: calibrated (`hybrid.noise_multipliers`), else `user_dp.noise_multiplier`
    under user-level DP, else `record_dp.noise_multiplier` under record-level DP alone, else 0 (no DP)."""
    given = parse_shares(cfg.hybrid.noise_multipliers, key="hybrid.noise_multipliers")
    default = (cfg.user_dp.noise_multiplier if cfg.user_dp.enabled else
               cfg.record_dp.noise_multiplier if cfg.record_dp.enabled else 0.0)
    return {k: given.get(k, default) for k in cfg.hybrid.kinds}


def _shares(cfg: RunConfig, kinds: list[str], target: str, rounds: int | None = None) -> dict[str, float]:
    shares = {k: cfg.hybrid.share(k) for k in kinds}
    missing = [k for k, s in shares.items() if s <= 0]
    if missing:
        raise ConfigError(f"hybrid.shares: the releases {missing} have no share of {target}")
    adapter_rounds = cfg.run.rounds if rounds is None else rounds
    if cfg.hybrid.share("adapter") > 0 and adapter_rounds > 0:
        shares["adapter"] = cfg.hybrid.share("adapter")
    return shares


def _pairs(values: dict[str, float]) -> str:
    return ",".join(f"{k}:{v!r}" for k, v in values.items())
