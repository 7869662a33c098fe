"""DP-FedAvg pieces: client clipping, Poisson client sampling, noise on the sum, one ledger entry per release."""

from __future__ import annotations

import numpy as np
import pytest

from fedrec.server.release import Aggregate, DpFedAvgRelease, weighted_sum
from fedrec.server.sampling import Sampler
from fedrec.shared.config import RunConfig
from fedrec.shared.privacy.calibrate import default_user_delta
from fedrec.shared.privacy.mechanisms import clip_update, l2_norm


def _state(rng, scale=1.0):
    return {"a": (rng.normal(size=(40, 30)) * scale).astype(np.float32),
            "b": (rng.normal(size=(500,)) * scale).astype(np.float32)}


def _release(cfg: RunConfig, population: int) -> DpFedAvgRelease:
    """The run's DP-FedAvg release, with the sample rate of its sampler (as `server.federation` builds it)."""
    sampler = Sampler(cfg, population, secret=True)
    return DpFedAvgRelease(cfg, population, sample_rate=sampler.sample_rate, poisson=sampler.poisson)


def test_clip_bounds_the_whole_delta():
    """A large delta is scaled to norm <= S as one flat vector; a small one is left exactly as it was."""
    rng = np.random.default_rng(0)
    big, small = _state(rng, 10.0), _state(rng, 1e-3)
    clipped, norm = clip_update(big, clip_norm=0.5)
    assert norm > 0.5 and l2_norm(clipped) <= 0.5
    ratio = clipped["a"] / big["a"]
    assert np.allclose(ratio, ratio.flat[0], rtol=1e-5)  # one common factor for every tensor
    same, _ = clip_update(small, clip_norm=0.5)
    assert all(np.array_equal(same[k], small[k]) for k in small)


def test_poisson_sampling_rate_and_variable_size():
    """Each client joins with probability q = C/N independently: the mean size is C, the size varies."""
    sampler = Sampler(RunConfig.from_mapping({"user_dp.enabled": True, "run.client_sampling": "poisson",
                                              "run.clients_per_round": 20}), population=400, secret=True)
    nodes = list(range(10**18, 10**18 + 400))
    sizes = [len(sampler.sample(nodes, r)) for r in range(300)]
    assert abs(np.mean(sizes) - 20) < 1.0 and len(set(sizes)) > 5
    assert all(n in nodes for n in sampler.sample(nodes, 301))


def test_release_adds_noise_of_std_z_s_on_the_sum_and_divides_by_expected_count():
    """(release * qN - sum of clipped deltas) has per-coordinate std z*S; each release is one ledger entry."""
    cfg = RunConfig.from_mapping({"user_dp.enabled": True, "run.client_sampling": "poisson",
                                  "run.clients_per_round": 10, "user_dp.noise_multiplier": 0.8,
                                  "user_dp.clip_norm": 0.25})
    dp = _release(cfg, population=100)
    rng = np.random.default_rng(1)
    template = {"w": np.zeros((200, 100), dtype=np.float32)}
    deltas = [clip_update({"w": rng.normal(size=(200, 100)).astype(np.float32)}, clip_norm=0.25)[0] for _ in range(7)]
    total, weight = weighted_sum(deltas, [1.0] * 7)
    out = dp.release(Aggregate(total, weight, 7), template, sampled=7, server_round=1)
    noise = out["w"].astype(np.float64) * 10 - sum(d["w"].astype(np.float64) for d in deltas)
    assert noise.std() == pytest.approx(0.8 * 0.25, rel=0.03)
    assert abs(noise.mean()) < 0.01
    # nobody answered: noise only, still a release
    assert dp.release(Aggregate(None, 0.0, 0), template, sampled=0, server_round=2) is not None
    assert dp.ledger.rounds() == [1, 2]
    # a secure round that aborted releases nothing and enters nothing in the ledger
    assert dp.release(Aggregate(None, 0.0, 0, aborted="unmask: 1 < t"), template, sampled=3, server_round=3) is None
    assert dp.ledger.rounds() == [1, 2]


def test_budget_stops_before_exceeding():
    """With a tiny user-epsilon-max the first release would already exceed it."""
    cfg = RunConfig.from_mapping({"user_dp.enabled": True, "run.client_sampling": "poisson",
                                  "run.clients_per_round": 50, "user_dp.noise_multiplier": 0.5,
                                  "user_dp.epsilon_max": 0.05})
    assert _release(cfg, population=100).would_exceed_budget()
    assert not _release(cfg.updated({"user_dp.epsilon_max": 50.0}), population=100).would_exceed_budget()


def test_delta_must_be_below_one_over_population():
    """delta >= 1/N would allow leaking a whole user; the default is min(1e-6, 1/(10 N))."""
    assert default_user_delta(1000) < 1 / 1000
    with pytest.raises(ValueError, match="1/N"):
        _release(RunConfig.from_mapping({"user_dp.enabled": True, "user_dp.delta": 0.02,
                                         "run.client_sampling": "poisson"}), population=100)
