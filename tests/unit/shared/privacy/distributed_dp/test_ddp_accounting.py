"""Skellam / DDG RDP bounds, the accountant that composes them with dp_accounting events, and their JSON form."""

from __future__ import annotations

import json
import math

import dp_accounting
import numpy as np
import pytest
from dp_accounting import dp_event
from dp_accounting.rdp import rdp_privacy_accountant
from scipy import special, stats

from fedrec.shared.privacy.distributed_dp import accounting, rounding
from fedrec.shared.privacy.distributed_dp.accounting import DistributedDiscreteGaussianDpEvent, SkellamDpEvent

ORDERS = np.array(accounting.DEFAULT_ORDERS)


def exact_skellam_renyi(alpha: float, shift: int, variance: float) -> float:
    """D_alpha(Sk(V) + shift || Sk(V)) from scipy's PMF (one dimension)."""
    lam = variance / 2
    half = int(shift + 60 * math.sqrt(variance) + 100)
    k = np.arange(-half, half + 1)
    lp, lq = stats.skellam.logpmf(k - shift, lam, lam), stats.skellam.logpmf(k, lam, lam)
    ok = np.isfinite(lp) & np.isfinite(lq)
    return float(special.logsumexp(alpha * lp[ok] + (1 - alpha) * lq[ok]) / (alpha - 1))


def test_skellam_rdp_is_the_theorem_at_integer_orders() -> None:
    a = np.array([2.0, 3.0, 7.0, 64.0])
    d1, d2, v = 40.0, 9.0, 250.0
    expected = a * d2**2 / (2 * v) + np.minimum(((2 * a - 1) * d2**2 + 6 * d1) / (4 * v**2), 3 * d1 / (2 * v))
    np.testing.assert_allclose(accounting.skellam_rdp(a, l1_sensitivity=d1, l2_sensitivity=d2, variance=v),
                               expected, rtol=1e-15)


@pytest.mark.parametrize("variance", [1.0, 4.0, 20.0])
@pytest.mark.parametrize("shift", [1, 3])
def test_skellam_rdp_upper_bounds_the_exact_divergence(variance: float, shift: int) -> None:
    for alpha in (1.5, 2.0, 2.5, 3.0, 5.0, 10.0, 30.0):
        exact = exact_skellam_renyi(alpha, shift, variance)
        bound = float(accounting.skellam_rdp(alpha, l1_sensitivity=shift, l2_sensitivity=shift, variance=variance)[0])
        assert exact <= bound * (1 + 1e-9), (alpha, exact, bound)


def test_the_exact_divergence_check_has_power() -> None:
    """Reading V as the Poisson rate (variance 2V, i.e. alpha D^2/(4V)) would understate the divergence."""
    alpha, shift, v = 3.0, 3, 20.0
    wrong = alpha * shift**2 / (4 * v)
    assert exact_skellam_renyi(alpha, shift, v) > wrong * 1.5


def test_skellam_rdp_is_monotone_in_alpha_and_at_least_gaussian() -> None:
    a = np.linspace(1.001, 300, 2000)
    for d1, d2, v in [(1.0, 1.0, 2.0), (1e4, 300.0, 1e5), (3e7, 2e5, 4e10)]:
        r = accounting.skellam_rdp(a, l1_sensitivity=d1, l2_sensitivity=d2, variance=v)
        assert np.all(np.diff(r) >= -1e-12 * r[1:])
        assert np.all(r >= accounting.gaussian_rdp(a, math.sqrt(v) / d2) * (1 - 1e-12))
        integer = np.arange(2, 300)
        on_grid = accounting.skellam_rdp(integer.astype(float), l1_sensitivity=d1, l2_sensitivity=d2, variance=v)
        ceil = accounting.skellam_rdp(np.ceil(a), l1_sensitivity=d1, l2_sensitivity=d2, variance=v)
        assert np.all(r <= ceil * (1 + 1e-12))  # the convex extension is never worse than rounding up
        assert np.all(on_grid > 0)


@pytest.mark.parametrize("z", [0.7, 1.0, 3.0])
def test_skellam_approaches_the_gaussian_as_the_scale_grows(z: float) -> None:
    """gamma -> infinity: Delta_2 = l2_bound(gamma S), V = (gamma z S)^2; RDP -> alpha / (2 z^2)."""
    s, d = 1.0, 2**16
    a = np.array([2.0, 8.0, 32.0])
    gaps = []
    for gs in (1e2, 1e3, 1e4, 1e5, 1e6, 1e8):
        l2 = rounding.l2_bound(gs * s, d)
        r = accounting.skellam_rdp(a, l1_sensitivity=rounding.l1_bound(l2, d), l2_sensitivity=l2,
                                   variance=(gs * z * s) ** 2)
        gaps.append(float(np.max(r / accounting.gaussian_rdp(a, z) - 1)))
    assert all(g > 0 for g in gaps)
    assert all(later < earlier for earlier, later in zip(gaps, gaps[1:], strict=False))
    assert gaps[-1] < 1e-5


def test_ddg_rdp_reduces_to_the_gaussian_without_tau_and_grows_with_it() -> None:
    a = np.array([2.0, 5.0])
    kw = dict(l1_sensitivity=300.0, l2_sensitivity=30.0, num_shares=10, dimension=1024)
    big = accounting.ddg_rdp(a, local_sigma2=1e4, **kw)
    assert accounting.ddg_tau(1e4, 10) == 0.0
    np.testing.assert_allclose(big, a * 30.0**2 / (2 * 10 * 1e4), rtol=1e-12)
    small = accounting.ddg_rdp(a, local_sigma2=0.2, **kw)
    assert accounting.ddg_tau(0.2, 10) > 0
    assert np.all(small > a * 30.0**2 / (2 * 10 * 0.2))
    r = accounting.ddg_rdp(np.linspace(1.01, 100, 500), local_sigma2=0.5, **kw)
    assert np.all(np.diff(r) >= 0)


def test_accountant_composes_skellam_with_dp_accounting_events() -> None:
    sk = SkellamDpEvent(1e7, 2e5, 3.2e10)
    gauss = dp_event.GaussianDpEvent(1.3)
    sampled = dp_event.PoissonSampledDpEvent(0.01, dp_event.GaussianDpEvent(1.1))
    events = [dp_event.SelfComposedDpEvent(sk, 20), gauss, dp_event.ComposedDpEvent([sampled, sk])]
    eps = accounting.epsilon(events, delta=1e-6)
    # the same by hand: RDP curves summed, dp_accounting's conversion
    plain = rdp_privacy_accountant.RdpAccountant(list(ORDERS), dp_accounting.NeighboringRelation.REPLACE_SPECIAL)
    plain.compose(gauss)
    plain.compose(sampled)
    rdp = plain._rdp + 21 * accounting.skellam_rdp(ORDERS, l1_sensitivity=1e7, l2_sensitivity=2e5, variance=3.2e10)
    expected, _ = rdp_privacy_accountant.compute_epsilon(ORDERS, rdp, 1e-6)
    assert eps == pytest.approx(expected, rel=1e-12)
    assert accounting.epsilon([], delta=1e-6) == 0.0
    assert accounting.epsilon(events[:1], delta=1e-6) < eps


def test_accountant_refuses_what_it_cannot_bound() -> None:
    sk = SkellamDpEvent(10.0, 3.0, 100.0)
    with pytest.raises(dp_accounting.UnsupportedEventError):
        accounting.epsilon([dp_event.PoissonSampledDpEvent(0.1, sk)], delta=1e-5)
    with pytest.raises(dp_accounting.UnsupportedEventError):
        accounting.epsilon([sk], delta=1e-5, neighboring_relation=dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE)
    acc = accounting.DistributedDpRdpAccountant(neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE)
    assert not acc.supports(sk)
    assert accounting.DistributedDpRdpAccountant().supports(dp_event.SelfComposedDpEvent(sk, 3))
    with pytest.raises(ValueError, match="delta"):
        accounting.epsilon([sk], delta=0.0)


def test_skellam_epsilon_is_never_below_the_central_gaussian() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        gs, z, d = 10 ** rng.uniform(1, 6), rng.uniform(0.5, 5), int(2 ** rng.integers(4, 21))
        l2 = rounding.l2_bound(gs, d)
        sk = SkellamDpEvent(rounding.l1_bound(l2, d), l2, (gs * z) ** 2)
        rounds = int(rng.integers(1, 200))
        e_sk = accounting.epsilon([dp_event.SelfComposedDpEvent(sk, rounds)], delta=1e-5)
        e_g = accounting.epsilon([dp_event.SelfComposedDpEvent(dp_event.GaussianDpEvent(z), rounds)], delta=1e-5)
        assert e_sk >= e_g * (1 - 1e-12)
        if gs >= 1e5 and e_g < 25:  # orders are integer for the Skellam: a few % where the best order is between
            assert e_sk <= e_g * 1.05


def test_skellam_epsilon_matches_the_gaussian_at_integer_optimal_orders() -> None:
    """z = 1, 20 rounds (the Gaussian's best order is 2) and z = 2, 20 rounds (order 3): equal to 1e-5."""
    gs, d = 1e6, 2**20
    l2 = rounding.l2_bound(gs, d)
    for z in (1.0, 2.0):
        sk = SkellamDpEvent(rounding.l1_bound(l2, d), l2, (gs * z) ** 2)
        e_sk = accounting.epsilon([dp_event.SelfComposedDpEvent(sk, 20)], delta=1e-5)
        e_g = accounting.epsilon([dp_event.SelfComposedDpEvent(dp_event.GaussianDpEvent(z), 20)], delta=1e-5)
        assert e_g <= e_sk <= e_g * (1 + 1e-5)


@pytest.mark.parametrize("event", [
    SkellamDpEvent(1.5e7, 0.1 + 0.2, 3.3e10),
    DistributedDiscreteGaussianDpEvent(1e4, 123.456, 0.7, 17, 4096),
    dp_event.SelfComposedDpEvent(SkellamDpEvent(10, 3, 7), 30),
    dp_event.ComposedDpEvent([SkellamDpEvent(10.0, 3.0, 7.0), dp_event.GaussianDpEvent(1.1),
                              dp_event.PoissonSampledDpEvent(0.02, dp_event.GaussianDpEvent(0.9))]),
])
def test_events_round_trip_through_json(event: dp_event.DpEvent) -> None:
    text = json.dumps(accounting.event_to_json(event))
    back = accounting.event_from_json(json.loads(text))
    assert back == event
    assert json.dumps(accounting.event_to_json(back)) == text
    assert accounting.epsilon([back], delta=1e-5) == accounting.epsilon([event], delta=1e-5)


def test_events_also_survive_dp_accountings_named_tuples() -> None:
    event = SkellamDpEvent(10.0, 3.0, 7.0)
    assert dp_event.DpEvent.from_named_tuple(event.to_named_tuple()) == event


def test_event_json_and_constructor_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match="SkellamDpEvent.variance"):
        SkellamDpEvent(1.0, 1.0, 0.0)
    with pytest.raises(ValueError, match="l2_sensitivity"):
        SkellamDpEvent(1.0, math.inf, 1.0)
    with pytest.raises(ValueError, match="num_shares must be an integer"):
        DistributedDiscreteGaussianDpEvent(1.0, 1.0, 1.0, 2.5, 8)
    with pytest.raises(ValueError, match="unknown event class"):
        accounting.event_from_json({"dp_event": "os.system"})
    with pytest.raises(ValueError, match="missing \\['variance'\\]"):
        accounting.event_from_json({"dp_event": "SkellamDpEvent", "l1_sensitivity": 1.0, "l2_sensitivity": 1.0})
    with pytest.raises(ValueError, match="unknown \\['x'\\]"):
        accounting.event_from_json({"dp_event": "SkellamDpEvent", "l1_sensitivity": 1.0, "l2_sensitivity": 1.0,
                                    "variance": 2.0, "x": 1})
    with pytest.raises(ValueError, match="num_shares: expected an integer"):
        accounting.event_from_json({"dp_event": "DistributedDiscreteGaussianDpEvent", "l1_sensitivity": 1.0,
                                    "l2_sensitivity": 1.0, "local_sigma2": 1.0, "num_shares": 2.5,
                                    "dimension": 8})
