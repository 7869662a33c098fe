"""Who is asked under user-level DP: Poisson sampling or the whole population, never a smaller fixed cohort; and
the epsilon each allowed rule gets, pinned against dp-accounting directly."""

from __future__ import annotations

import numpy as np
import pytest
from dp_accounting import dp_event as E
from dp_accounting.pld import pld_privacy_accountant

from fedrec.server.empirical_audit import user_level_epsilon
from fedrec.server.release import Aggregate, DpFedAvgRelease
from fedrec.server.sampling import Sampler, check_user_level_sampling
from fedrec.shared.config import ConfigError, RunConfig

N, C, Z, T = 40, 10, 1.0, 3


def _cfg(**changes) -> RunConfig:
    return RunConfig.from_mapping({"user_dp.enabled": True, "user_dp.noise_multiplier": Z,
                                   "run.clients_per_round": C, **changes})


def _run(cfg: RunConfig) -> DpFedAvgRelease:
    """T releases of a DpFedAvgRelease built the way `server.federation` builds it."""
    check_user_level_sampling(cfg, N)
    sampler = Sampler(cfg, N, secret=True)
    dp = DpFedAvgRelease(cfg, N, sample_rate=sampler.sample_rate, poisson=sampler.poisson)
    template = {"w": np.zeros(5, dtype=np.float32)}
    for r in range(1, T + 1):
        dp.release(Aggregate(None, 0.0, 0), template, sampled=len(sampler.sample(list(range(N)), r)), server_round=r)
    return dp


def _pld(event: E.DpEvent, delta: float) -> float:
    acc = pld_privacy_accountant.PLDAccountant()
    acc.compose(E.SelfComposedDpEvent(event, T))
    return acc.get_epsilon(delta)


def test_a_fixed_cohort_smaller_than_the_population_is_refused_under_user_level_dp() -> None:
    """10 of 40 in a fixed cohort: adding a user displaces another (sensitivity 2S), which the add/remove
    Gaussian accounting would under-state; the error says to use Poisson sampling."""
    with pytest.raises(ConfigError, match=r"run.client_sampling = \"poisson\"") as e:
        check_user_level_sampling(_cfg(**{"run.client_sampling": "fixed"}), N)
    assert "10 of 40" in str(e.value) and "2S" in str(e.value)
    with pytest.raises(ValueError, match="Poisson"):  # the release refuses it too, whoever builds it
        DpFedAvgRelease(_cfg(**{"run.client_sampling": "fixed"}), N, sample_rate=C / N, poisson=False)
    check_user_level_sampling(_cfg(**{"run.client_sampling": "fixed", "user_dp.enabled": False}), N)  # no DP: fine


def test_poisson_epsilon_equals_dp_accounting_directly() -> None:
    """Poisson q = C/N: the run's epsilon is dp-accounting's PLD of T PoissonSampled(q, Gaussian(z)) at the
    default delta min(1e-6, 1/(10 N)) = 1e-6."""
    dp = _run(_cfg(**{"run.client_sampling": "poisson"}))
    assert dp.delta == 1e-6
    expected = _pld(E.PoissonSampledDpEvent(C / N, E.GaussianDpEvent(Z)), 1e-6)
    assert user_level_epsilon(dp) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("full", [{"run.fraction_train": 1.0}, {"run.clients_per_round": N}])
def test_full_participation_epsilon_equals_gaussian_composition_directly(full) -> None:
    """A fixed cohort of the whole population: every user in every round, sensitivity S under add/remove, so T
    Gaussian(z) releases exactly, as dp-accounting computes them."""
    dp = _run(_cfg(**{"run.client_sampling": "fixed", **full}))
    assert dp.ledger.rounds() == [1, 2, 3]
    assert user_level_epsilon(dp) == pytest.approx(_pld(E.GaussianDpEvent(Z), 1e-6), rel=1e-9)
