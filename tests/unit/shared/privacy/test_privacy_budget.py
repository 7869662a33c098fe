"""The privacy budget stops *before* the release that would exceed epsilon_max, never after."""

from __future__ import annotations

import pytest

from fedrec.shared.privacy.accountants import RdpAccountant
from fedrec.shared.privacy.budget import PrivacyBudget, check_budget, epsilon_after, would_exceed
from fedrec.shared.privacy.errors import PrivacyBudgetExceeded
from fedrec.shared.privacy.events import dpfedavg_event
from fedrec.shared.privacy.ledger import PrivacyLedger


def test_a_server_loop_stops_at_the_last_round_within_budget():
    """Simulated DP-FedAvg rounds: the loop releases while within budget and stops at exactly the right round."""
    # Prepare
    budget = PrivacyBudget(epsilon_max=2.0, delta=1e-5, accountant="rdp")
    ledger = PrivacyLedger(guarantee="user-level", subject="run")
    event = dpfedavg_event(noise_multiplier=1.0, sample_rate=0.05)
    # Execute
    stopped_at = None
    for rnd in range(1, 500):
        try:
            budget.check(ledger, event)
        except PrivacyBudgetExceeded as e:
            stopped_at, error = rnd, e
            break
        ledger.record_user_level_release(round=rnd, noise_multiplier=1.0, sample_rate=0.05)
    # Assert
    assert stopped_at is not None and len(ledger) == stopped_at - 1
    spent = RdpAccountant().epsilon(ledger.events(), delta=1e-5)
    assert spent <= 2.0 < RdpAccountant().epsilon(ledger.events() + [event], delta=1e-5)
    assert error.epsilon > error.epsilon_max == 2.0 and "epsilon_max 2" in str(error)


def test_would_exceed_is_a_strict_comparison_with_the_whole_ledger():
    # Prepare
    ledger = PrivacyLedger(guarantee="user-level")
    for rnd in range(1, 4):
        ledger.record_user_level_release(round=rnd, noise_multiplier=2.0, sample_rate=None)
    event = dpfedavg_event(noise_multiplier=2.0, sample_rate=None)
    eps4 = epsilon_after(ledger, event, delta=1e-5, accountant="pld")
    # Execute / Assert
    assert not would_exceed(ledger, event, epsilon_max=eps4, delta=1e-5, accountant="pld")
    assert would_exceed(ledger, event, epsilon_max=eps4 * 0.999, delta=1e-5, accountant="pld")
    assert check_budget(ledger, event, epsilon_max=eps4, delta=1e-5, accountant="pld") == eps4
    assert epsilon_after(ledger, None, delta=1e-5, accountant="pld") < eps4
    assert len(ledger) == 3  # checking never records anything


@pytest.mark.parametrize("kwargs, needle", [
    ({"epsilon_max": 0.0, "delta": 1e-5}, "epsilon_max"),
    ({"epsilon_max": 1.0, "delta": 1.0}, "delta"),
    ({"epsilon_max": 1.0, "delta": 1e-5, "accountant": "moments"}, "moments"),
])
def test_bad_budgets_fail_at_configuration_time(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        PrivacyBudget(**kwargs)


def test_budget_knobs_are_keyword_only():
    with pytest.raises(TypeError):
        PrivacyBudget(1.0, 1e-5)  # type: ignore[misc]
