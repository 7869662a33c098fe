"""Accountants: one contract for all (subclassed per accountant), the golden value, and "no reset" accounting."""

from __future__ import annotations

import math

import pytest
from dp_accounting import dp_event as E
from dp_accounting.pld import pld_privacy_accountant
from dp_accounting.rdp import rdp_privacy_accountant

from fedrec.shared.privacy.accountants import (
    ACCOUNTANTS,
    Accountant,
    OpacusPrvAccountant,
    OpacusRdpAccountant,
    PldAccountant,
    RdpAccountant,
    history_from_events,
    independent_accountants,
    make_accountant,
    opacus_epsilon,
)
from fedrec.shared.privacy.errors import UnknownAccountant, UnsupportedMechanism
from fedrec.shared.privacy.events import dpfedavg_event, dpsgd_event
from fedrec.shared.privacy.ledger import PrivacyLedger

# Abadi et al.'s CIFAR-style setting: the value Opacus' RDP accountant prints, to 4 decimals.
GOLDEN = {"noise_multiplier": 1.1, "sample_rate": 256 / 50000, "steps": 5859}
GOLDEN_DELTA, GOLDEN_EPS = 1e-5, 1.9904


class AccountantContract:
    """What every accountant must do. Not collected itself (no Test prefix); each subclass names one accountant."""

    accountant: type[Accountant]
    delta = 1e-5

    def make(self) -> Accountant:
        return self.accountant()

    def events(self) -> list[E.DpEvent]:
        """A few supported events of the shape fedrec ledgers hold."""
        return [dpsgd_event(noise_multiplier=1.0, sample_rate=0.02, steps=20),
                dpfedavg_event(noise_multiplier=1.5, sample_rate=0.05),
                dpsgd_event(noise_multiplier=1.0, sample_rate=0.02, steps=10)]

    def test_empty_ledger_gives_zero(self):
        assert self.make().epsilon([], delta=self.delta) == 0.0

    def test_noop_only_gives_zero(self):
        assert self.make().epsilon([E.NoOpDpEvent()], delta=self.delta) == 0.0

    @pytest.mark.parametrize("event", [E.UnsupportedDpEvent(), E.ComposedDpEvent([E.UnsupportedDpEvent()]),
                                       E.SelfComposedDpEvent(E.UnsupportedDpEvent(), 3)],
                             ids=["bare", "composed", "self-composed"])
    def test_unsupported_event_raises_naming_it(self, event):
        with pytest.raises(UnsupportedMechanism, match=r"events\[1\]"):
            self.make().epsilon([self.events()[0], event], delta=self.delta)

    def test_more_events_never_lower_epsilon(self):
        # Prepare
        acc, events = self.make(), self.events()
        # Execute
        eps = [acc.epsilon(events[:k], delta=self.delta) for k in range(len(events) + 1)]
        # Assert
        assert eps[0] == 0.0 and all(math.isfinite(e) for e in eps)
        assert all(a <= b for a, b in zip(eps, eps[1:], strict=False)), eps

    def test_smaller_delta_never_lowers_epsilon(self):
        acc, events = self.make(), self.events()
        assert acc.epsilon(events, delta=1e-7) >= acc.epsilon(events, delta=1e-3)

    def test_rejects_a_bad_delta(self):
        for delta in (0.0, 1.0, -1e-5, math.nan):
            with pytest.raises(ValueError, match="delta"):
                self.make().epsilon(self.events(), delta=delta)

    def test_settings_rebuild_the_same_accountant_through_the_registry(self):
        # Prepare
        acc = self.make()
        # Execute
        again = make_accountant(acc.name, adjacency=acc.adjacency, settings=acc.settings())
        # Assert
        assert type(again) is type(acc) and again.settings() == acc.settings()
        assert again.epsilon(self.events(), delta=self.delta) == acc.epsilon(self.events(), delta=self.delta)

    def test_cumulative_epsilons_match_prefixes(self):
        # Prepare
        acc, events = self.make(), self.events()
        # Execute
        curve = acc.cumulative_epsilons([[e] for e in events], delta=self.delta)
        # Assert
        prefixes = [acc.epsilon(events[: k + 1], delta=self.delta) for k in range(len(events))]
        assert curve == pytest.approx(prefixes, rel=1e-9)


class TestRdpContract(AccountantContract):
    accountant = RdpAccountant

    def test_matches_raw_dp_accounting_with_the_same_orders(self):
        # Prepare
        raw = rdp_privacy_accountant.RdpAccountant(list(RdpAccountant().settings()["orders"]))
        for e in self.events():
            raw.compose(e)
        # Execute / Assert
        assert RdpAccountant().epsilon(self.events(), delta=self.delta) == pytest.approx(
            raw.get_epsilon(self.delta), rel=1e-12)

    def test_non_private_release_gives_infinity(self):
        assert RdpAccountant().epsilon([E.NonPrivateDpEvent()], delta=self.delta) == math.inf


class TestPldContract(AccountantContract):
    accountant = PldAccountant

    def make(self) -> Accountant:
        # A coarser grid than the default keeps the contract tests fast; precision is tested below.
        return PldAccountant(value_discretization_interval=1e-3)

    def test_matches_raw_dp_accounting_composed_one_by_one(self):
        """Compressing into SelfComposed groups changes nothing beyond discretisation noise."""
        # Prepare
        raw = pld_privacy_accountant.PLDAccountant(value_discretization_interval=1e-3)
        for e in self.events():
            raw.compose(e)
        # Execute / Assert
        assert self.make().epsilon(self.events(), delta=self.delta) == pytest.approx(
            raw.get_epsilon(self.delta), rel=1e-2)

    def test_states_its_discretisation(self):
        assert PldAccountant().settings() == {"value_discretization_interval": 1e-4, "pessimistic_estimate": True}


class TestOpacusRdpContract(AccountantContract):
    accountant = OpacusRdpAccountant


class TestOpacusPrvContract(AccountantContract):
    accountant = OpacusPrvAccountant


def test_golden_value_opacus_rdp_and_dp_accounting_agree():
    """z=1.1, q=256/50000, T=5859, delta=1e-5: Opacus RDP gives 1.9904; dp-accounting RDP agrees to 1e-3."""
    # Prepare
    event = dpsgd_event(**GOLDEN)
    # Execute
    opacus = opacus_epsilon([tuple(GOLDEN.values())], delta=GOLDEN_DELTA, method="rdp")
    ours = RdpAccountant().epsilon([event], delta=GOLDEN_DELTA)
    raw = rdp_privacy_accountant.RdpAccountant()
    raw.compose(event)
    # Assert
    assert opacus == pytest.approx(GOLDEN_EPS, abs=1e-4)
    assert ours == pytest.approx(GOLDEN_EPS, abs=1e-3)
    assert raw.get_epsilon(GOLDEN_DELTA) == pytest.approx(GOLDEN_EPS, abs=1e-4)
    assert ours <= opacus * (1 + 1e-6)  # more orders can only tighten an RDP bound (up to float noise)


def test_golden_value_tight_accountants_are_below_rdp():
    """PLD 1.8161 and Opacus PRV (upper) 1.826 bracket the true value, both under the RDP bound."""
    event = dpsgd_event(**GOLDEN)
    pld = PldAccountant().epsilon([event], delta=GOLDEN_DELTA)
    prv = OpacusPrvAccountant().epsilon([event], delta=GOLDEN_DELTA)
    assert pld == pytest.approx(1.8161, abs=1e-3)
    assert prv == pytest.approx(1.826, abs=2e-3)
    assert max(pld, prv) < GOLDEN_EPS


def test_device_epsilon_after_k_rounds_is_the_whole_history_without_reset():
    """A device's record-level epsilon after k rounds equals one accountant fed its entire step history, as an
    Opacus accountant that was never reset reports it; a per-round reset would report much less."""
    # Prepare: 6 rounds of local DP-SGD, with a changed noise multiplier from round 4 on
    ledger = PrivacyLedger(guarantee="record-level", subject="device-1")
    history = []
    for rnd in range(1, 7):
        z, q, steps = (1.0 if rnd < 4 else 1.2), 0.01, 30 + rnd
        ledger.record_local_dpsgd(round=rnd, noise_multiplier=z, sample_rate=q, steps=steps)
        history.append((z, q, steps))
    # Execute
    ours = RdpAccountant().epsilon(ledger.events(), delta=1e-5)
    whole = rdp_privacy_accountant.RdpAccountant(list(RdpAccountant().settings()["orders"]))
    for z, q, steps in history:
        whole.compose(dpsgd_event(noise_multiplier=z, sample_rate=q, steps=steps))
    opacus_never_reset = opacus_epsilon(history, delta=1e-5, method="rdp")
    last_round_only = RdpAccountant().epsilon(ledger.events()[-1:], delta=1e-5)
    # Assert
    assert ours == pytest.approx(whole.get_epsilon(1e-5), rel=1e-9)
    assert ours == pytest.approx(opacus_never_reset, rel=1e-3)
    assert history_from_events(ledger.events()) == [(1.0, 0.01, 31 + 32 + 33), (1.2, 0.01, 34 + 35 + 36)]
    assert ours > 1.5 * last_round_only


def test_opacus_accountants_refuse_what_opacus_cannot_account_for():
    with pytest.raises(UnsupportedMechanism, match="LaplaceDpEvent"):
        OpacusRdpAccountant().epsilon([E.LaplaceDpEvent(1.0)], delta=1e-5)
    with pytest.raises(UnsupportedMechanism, match="add_or_remove_one"):
        OpacusPrvAccountant(adjacency="replace_one").epsilon([dpfedavg_event(noise_multiplier=1.0,
                                                                             sample_rate=0.1)], delta=1e-5)


def test_registry_names_and_independence():
    assert set(ACCOUNTANTS) == {"rdp", "pld", "opacus-rdp", "opacus-prv", "rdp-distributed"}
    assert independent_accountants("rdp") == ["pld"]
    assert independent_accountants("rdp-distributed") == ["rdp", "pld"]
    assert independent_accountants("pld") == ["rdp"]
    assert independent_accountants("opacus-prv") == ["rdp", "pld"]
    assert independent_accountants("opacus-rdp") == ["rdp", "pld"]
    with pytest.raises(UnknownAccountant, match="'moments'"):
        make_accountant("moments")
    with pytest.raises(ValueError, match="unexpected keyword"):
        make_accountant("pld", settings={"discretisation": 1e-3})


def test_rdp_drops_only_the_excluded_order_warning(caplog) -> None:
    """dp-accounting's "failed to converge" warning (the order is then unused: sound) is filtered, nothing else."""
    import logging

    from dp_accounting import dp_event

    from fedrec.shared.privacy.accountants.rdp import RdpAccountant

    event = dp_event.SelfComposedDpEvent(dp_event.PoissonSampledDpEvent(0.25, dp_event.GaussianDpEvent(1.0)), 4)
    with caplog.at_level(logging.WARNING, logger="absl"):
        eps = RdpAccountant().epsilon([event], delta=1e-5)
        logging.getLogger("absl").warning("another warning")
    assert 0 < eps < float("inf")
    assert [r.getMessage() for r in caplog.records] == ["another warning"]


def test_pld_curve_composes_incrementally_and_matches_each_prefix():
    """PLD's epsilon-over-rounds curve (one distribution per distinct batch, composed round by round) equals
    dp-accounting's PLDAccountant run on each prefix, so a report's curve ends at its PLD headline."""
    release = dpfedavg_event(noise_multiplier=1.0, sample_rate=0.05)
    batches = [[release], [release], [], [release, dpfedavg_event(noise_multiplier=2.0, sample_rate=None)]]
    curve = PldAccountant().cumulative_epsilons(batches, delta=1e-6)
    direct = []
    for i in range(len(batches)):
        acc = pld_privacy_accountant.PLDAccountant()
        for event in (e for b in batches[: i + 1] for e in b):
            acc.compose(event)
        direct.append(acc.get_epsilon(1e-6))
    assert curve == pytest.approx(direct, rel=1e-6)
    assert curve[-1] == pytest.approx(PldAccountant().epsilon([e for b in batches for e in b], delta=1e-6), rel=1e-6)
