"""Target epsilon -> noise multiplier: the calibrated z meets the target, a slightly smaller z does not."""

from __future__ import annotations

import pytest

from fedrec.server.calibration import resolve_noise
from fedrec.shared.config import RunConfig
from fedrec.shared.privacy import make_accountant
from fedrec.shared.privacy.calibrate import record_noise_for, user_noise_for
from fedrec.shared.privacy.events import dpfedavg_event, dpsgd_event
from fedrec.shared.train.dp_sgd import plan_round


def test_user_noise_is_the_smallest_that_meets_the_target() -> None:
    # Prepare
    target = 1.0
    q, rounds, delta = 50 / 1892, 40, 1 / 1892**1.1
    pld = make_accountant("pld")

    def eps(z: float) -> float:
        return pld.epsilon([dpfedavg_event(noise_multiplier=z, sample_rate=q)] * rounds, delta=delta)

    # Execute
    z = user_noise_for(target_epsilon=target, rounds=rounds, sample_rate=q, delta=delta)
    # Assert: within target, and 2% less noise would exceed it (the search is tight and errs on the private side)
    assert eps(z) <= target < eps(z * 0.98)


def test_record_noise_meets_the_target_over_the_planned_rounds() -> None:
    # Prepare
    acc = make_accountant("rdp")
    # Execute
    z = record_noise_for(target_epsilon=2.0, rounds=3, sample_rate=0.25, steps=4, delta=1e-5, accountant="rdp")
    # Assert
    events = [dpsgd_event(noise_multiplier=z, sample_rate=0.25, steps=4)] * 3
    assert acc.epsilon(events, delta=1e-5) <= 2.0 < acc.epsilon(events + events[:1], delta=1e-5)


def test_an_unreachable_target_is_an_error() -> None:
    with pytest.raises(ValueError, match="out of reach"):
        user_noise_for(target_epsilon=1e-4, rounds=1000, sample_rate=None, delta=1e-9)


def test_resolve_noise_sets_z_and_the_budget_from_targets_only_when_asked() -> None:
    # Prepare
    plain = RunConfig.from_mapping({"record_dp.enabled": True, "user_dp.enabled": True, "hybrid.releases": "",
                                    "run.client_sampling": "poisson", "record_dp.accountant": "rdp"})
    targeted = plain.updated({"record_dp.target_epsilon": 4.0, "record_dp.target_rounds": 2,
                              "user_dp.target_epsilon": 1.0})
    # Execute
    same, resolved = resolve_noise(plain, 200), resolve_noise(targeted, 200)
    # Assert
    assert same == plain
    assert resolved.record_dp.epsilon_max == 4.0 and resolved.user_dp.epsilon_max == 1.0
    event = plan_round(resolved).event()
    assert make_accountant("opacus-rdp").epsilon([event] * 2, delta=resolved.record_dp.delta) <= 4.0
    assert resolved.user_dp.noise_multiplier != plain.user_dp.noise_multiplier


@pytest.mark.parametrize(("population", "delta"), [(10, 1e-6), (1_892, 1e-6), (100_000, 1e-6), (10**7, 1e-8)])
def test_default_user_delta_is_min_of_1e6_and_a_tenth_of_one_over_n(population, delta) -> None:
    """delta = min(1e-6, 1/(10 N)): never more than a tenth of 1/N, and at most 1e-6 (1/N^1.1 was 2.5e-4 at
    N = 1,892: 0.47/N)."""
    from fedrec.shared.privacy.calibrate import default_user_delta

    assert default_user_delta(population) == pytest.approx(delta)
    assert default_user_delta(population) <= 1 / (10 * population)
