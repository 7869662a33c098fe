"""Turn target epsilons into noise multipliers, once, before a run starts (public settings only).

`record_dp.target_epsilon` (device, DP-SGD) and `user_dp.target_epsilon` (server, DP-FedAvg) are resolved here
into `record_dp.noise_multiplier` / `user_dp.noise_multiplier` with the accountant that will budget and report the
spend, over the planned composition: `record_dp.target_rounds` rounds of K-slot DP-SGD for a device, `run.rounds`
releases for the run. Unless a budget is set explicitly, the target also becomes the budget, so a device that is
sampled more often than planned declines instead of exceeding it.
"""

from __future__ import annotations

from fedrec.shared.config import RunConfig
from fedrec.shared.privacy.calibrate import default_user_delta, record_noise_for, user_noise_for
from fedrec.shared.train.dp_sgd import OPACUS_ACCOUNTANTS, plan_round


def resolve_noise(cfg: RunConfig, population: int) -> RunConfig:
    """`cfg` with noise multipliers (and default budgets) derived from its target epsilons, if any."""
    changes: dict[str, float] = {}
    if cfg.record_dp.enabled and cfg.record_dp.target_epsilon > 0:
        plan = plan_round(cfg)
        changes["record_dp.noise_multiplier"] = record_noise_for(
            target_epsilon=cfg.record_dp.target_epsilon, rounds=cfg.record_dp.target_rounds,
            sample_rate=plan.sample_rate, steps=plan.steps, delta=cfg.record_dp.delta,
            accountant=OPACUS_ACCOUNTANTS[cfg.record_dp.accountant])
        if cfg.record_dp.epsilon_max <= 0:
            changes["record_dp.epsilon_max"] = cfg.record_dp.target_epsilon
    if cfg.user_dp.enabled and cfg.user_dp.target_epsilon > 0:
        q = cfg.run.clients_sampled(population) / population if cfg.run.client_sampling == "poisson" else None
        changes["user_dp.noise_multiplier"] = user_noise_for(
            target_epsilon=cfg.user_dp.target_epsilon, rounds=cfg.run.rounds, sample_rate=q,
            delta=cfg.user_dp.delta or default_user_delta(population))
        if cfg.user_dp.epsilon_max <= 0:
            changes["user_dp.epsilon_max"] = cfg.user_dp.target_epsilon
    return cfg.updated(changes, source="target epsilon calibration") if changes else cfg
