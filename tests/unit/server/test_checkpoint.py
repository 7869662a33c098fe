"""The server checkpoint file: exact round trip, private file mode, damaged or missing files refused by name, and
the DP generators continuing exactly where they stopped."""

from __future__ import annotations

import math
import stat
from pathlib import Path

import numpy as np
import pytest

from fedrec.server.checkpoint import (
    Checkpoint,
    CheckpointError,
    load_checkpoint,
    mark_finished,
    resumable_config,
    save_checkpoint,
    state_path,
)
from fedrec.server.release import Aggregate, DpFedAvgRelease
from fedrec.server.sampling import Sampler
from fedrec.shared.config import RunConfig
from fedrec.shared.run_dir import write_config


class _UserDp:
    """The run's secret user-level state as `server.federation` keeps it: the secret sampler and the release."""

    def __init__(self, cfg: RunConfig, population: int) -> None:
        self.sampler = Sampler(cfg, population, secret=True)
        self.release = DpFedAvgRelease(cfg, population, sample_rate=self.sampler.sample_rate,
                                       poisson=self.sampler.poisson)

    def secret_state(self) -> dict:
        return {**self.release.secret_state(), "sampler": self.sampler.secret_state()}

    def restore(self, state: dict) -> None:
        self.release.restore(state, where="test")
        self.sampler.restore(state["sampler"], where="test")

    def step(self, nodes: list[int], server_round: int) -> tuple[list[int], dict]:
        sampled = self.sampler.sample(nodes, server_round)
        out = self.release.release(Aggregate({"w": np.ones(4)}, 1.0, 1), {"w": np.zeros(4)}, sampled=1,
                                   server_round=server_round)
        return sampled, out


def _checkpoint(dp: _UserDp | None = None) -> Checkpoint:
    rng = np.random.default_rng(0)
    return Checkpoint(round=2, global_state={"a.weight": rng.normal(size=(3, 4)).astype(np.float32),
                                             "b": np.zeros(5, np.float32)},
                      adapter_round=2, succeeded=2,
                      rounds=[{"round": 1, "status": "ok", "train_loss": float("nan")}, {"round": 2, "status": "ok"}],
                      client_rows=[{"round": 1, "node": 7, "partition": 3, "phase": "train"}],
                      record_epsilons={3: 1.25, 0: 0.5}, identity="partition",
                      user_dp=dp.secret_state() if dp is not None else None, audit_seed=123, audit_seconds=1.5,
                      initial_state={"a.weight": np.ones((3, 4), np.float32), "b": np.ones(5, np.float32)},
                      audit_released={"a.weight": rng.normal(size=(3, 4)), "b": np.full(5, 1e-9)})


def test_round_trip_is_exact_and_the_file_is_private(tmp_path: Path) -> None:
    dp = _UserDp(RunConfig.from_mapping({"user_dp.enabled": True, "run.client_sampling": "poisson"}), population=20)
    saved = _checkpoint(dp)
    save_checkpoint(tmp_path, saved)
    back = load_checkpoint(tmp_path)
    assert stat.S_IMODE(state_path(tmp_path).stat().st_mode) == 0o600
    assert stat.S_IMODE(state_path(tmp_path).parent.stat().st_mode) == 0o700
    assert back.round == 2 and back.adapter_round == 2 and back.succeeded == 2 and back.identity == "partition"
    assert back.record_epsilons == {3: 1.25, 0: 0.5} and back.audit_seed == 123
    assert math.isnan(back.rounds[0]["train_loss"]) and back.rounds[1] == saved.rounds[1]
    assert back.client_rows == saved.client_rows and back.user_dp == saved.user_dp
    assert back.audit_released is not None and back.audit_released["b"].dtype == np.float64  # the audit's sum, exact
    for got, want in ((back.global_state, saved.global_state), (back.initial_state, saved.initial_state),
                      (back.audit_released, saved.audit_released)):
        assert got is not None and want is not None and set(got) == set(want)
        for k in want:
            np.testing.assert_array_equal(got[k], want[k])


def test_restored_generators_continue_exactly(tmp_path: Path) -> None:
    """Sampling and noise after a restore are what the original generators would have drawn next."""
    cfg = RunConfig.from_mapping({"user_dp.enabled": True, "run.client_sampling": "poisson",
                                  "run.clients_per_round": 5})
    nodes = list(range(20))
    original = _UserDp(cfg, population=20)
    original.step(nodes, 1)
    save_checkpoint(tmp_path, _checkpoint(original))
    resumed = _UserDp(cfg, population=20)  # fresh secrets, then the checkpoint's state
    resumed.restore(load_checkpoint(tmp_path).user_dp or {})
    assert resumed.release.ledger == original.release.ledger and resumed.release.ledger.rounds() == [1]
    (sampled_a, a), (sampled_b, b) = resumed.step(nodes, 2), original.step(nodes, 2)
    assert sampled_a == sampled_b
    np.testing.assert_array_equal(a["w"], b["w"])


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_a_damaged_checkpoint_is_refused_by_name(tmp_path: Path, damage: str) -> None:
    path = save_checkpoint(tmp_path, _checkpoint())
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[-3] ^= 0xFF  # inside the tensor bytes: only the digest notices
    else:
        data = data[: len(data) // 2]
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="damaged checkpoint") as e:
        load_checkpoint(tmp_path)
    assert str(path) in str(e.value)


def test_missing_and_finished_checkpoints_are_refused(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint") as e:
        load_checkpoint(tmp_path)
    assert str(state_path(tmp_path)) in str(e.value)
    save_checkpoint(tmp_path, _checkpoint())
    mark_finished(tmp_path, rounds=2)
    assert not state_path(tmp_path).exists()  # the secrets are gone once the run is over
    with pytest.raises(CheckpointError, match="finished"):
        load_checkpoint(tmp_path)


def test_resume_settings_must_match_the_run(tmp_path: Path) -> None:
    cfg = RunConfig.from_mapping({"run.rounds": 3, "user_dp.enabled": True, "run.name": "r"})
    write_config(tmp_path, cfg)
    save_checkpoint(tmp_path, _checkpoint())
    assert resumable_config(tmp_path) == cfg
    assert resumable_config(tmp_path, overrides={"run.rounds": "3", "user_dp.enabled": True}) == cfg
    with pytest.raises(CheckpointError, match="run.rounds: run has 3, given 5"):
        resumable_config(tmp_path, overrides={"run.rounds": 5})
    with pytest.raises(CheckpointError, match="run.seed: run has 0, given 9"):
        resumable_config(tmp_path, given=cfg.updated({"run.seed": 9}))
    with pytest.raises(CheckpointError, match="no config.json"):
        resumable_config(tmp_path / "elsewhere")
