"""What crosses the wire and the disk: adapter records and files, delta checks, metric records, aggregation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedrec.server.release import apply_update, weighted_mean
from fedrec.shared.config import RunConfig
from fedrec.shared.metrics import RankingMetrics
from fedrec.shared.model.build import build_model
from fedrec.shared.model.recommender import Recommender, load_trainable_state, trainable_state
from fedrec.shared.model.scoring import score_users
from fedrec.shared.protocol import (
    State,
    check_delta,
    metrics_to_record,
    record_to_metrics,
    record_to_state,
    state_bytes,
    state_to_record,
    subtract,
)
from fedrec.shared.run_dir import ADAPTER, read_adapter, write_adapter


def _assert_bit_exact(a: State, b: State) -> None:
    assert list(a) == list(b)
    for k in a:
        assert b[k].dtype == np.float32 and b[k].shape == a[k].shape, k
        assert a[k].tobytes() == b[k].tobytes(), k


@pytest.fixture(scope="module")
def trained_like(tiny_data) -> tuple[Recommender, State]:
    """A MiniLM model whose adapter state is random (as after training) and that state as numpy arrays."""
    catalog, _ = tiny_data
    model = build_model(RunConfig(), catalog, cached=False)
    rng = np.random.default_rng(7)
    state = {k: (v.numpy() + 0.05 * rng.standard_normal(v.shape)).astype(np.float32)
             for k, v in trainable_state(model).items()}
    load_trainable_state(model, state)
    model.eval()
    return model, state


def _small_state() -> State:
    rng = np.random.default_rng(0)
    return {"a.lora_A": rng.standard_normal((2, 3)).astype(np.float32),
            "head.weight": rng.standard_normal((4, 4)).astype(np.float32),
            "item_bias.weight": np.zeros((5, 1), dtype=np.float32)}


def test_state_record_round_trip_is_bit_exact(trained_like) -> None:
    """Trainable state -> ArrayRecord -> state gives the same keys, order, shapes, float32 and bytes; byte count."""
    # Prepare
    model, _ = trained_like
    state = {k: v.numpy() for k, v in trainable_state(model).items()}
    # Execute
    back = record_to_state(state_to_record(state))
    # Assert
    _assert_bit_exact(state, back)
    assert state_bytes(back) == sum(v.nbytes + len(k) for k, v in state.items())
    # Flower's count_bytes also counts each tensor's .npy header (dtype/shape), which state_bytes leaves out.
    overhead = state_to_record(state).count_bytes() - state_bytes(back)
    assert 0 <= overhead <= 256 * len(state)


def test_adapter_file_round_trip_and_reload_scores(trained_like, tiny_data, tmp_path: Path) -> None:
    """write_adapter/read_adapter is bit-exact, and the file loaded into a fresh model reproduces its scores."""
    # Prepare
    model, state = trained_like
    catalog, splits = tiny_data
    cfg = RunConfig()
    users = [s for s in splits if s.evaluated][:3]
    want = score_users(model, users, catalog, cfg)
    fresh = build_model(cfg, catalog, cached=False)
    # Execute
    write_adapter(tmp_path, state, server_round=3)
    back = read_adapter(tmp_path / ADAPTER)
    before_load = score_users(fresh, users, catalog, cfg)
    load_trainable_state(fresh, back)
    got = score_users(fresh, users, catalog, cfg)
    # Assert
    assert sorted(back) == sorted(state)
    _assert_bit_exact(state, {k: back[k] for k in state})
    assert not np.array_equal(before_load, want), "the fresh model must differ before the adapter is loaded"
    np.testing.assert_array_equal(got, want)
    assert [p.name for p in tmp_path.iterdir()] == [ADAPTER]  # no temporary file left behind


def test_adapter_file_records_round_and_format(tmp_path: Path) -> None:
    """The safetensors header carries the server round and the adapter format tag."""
    from safetensors import safe_open

    # Execute
    write_adapter(tmp_path, _small_state(), server_round=12)
    # Assert
    with safe_open(str(tmp_path / ADAPTER), framework="numpy") as f:
        assert f.metadata() == {"server_round": "12", "format": "fedrec-adapter-v1"}


def test_read_adapter_missing_file(tmp_path: Path) -> None:
    """A run directory without an adapter gives FileNotFoundError naming the path."""
    with pytest.raises(FileNotFoundError, match=ADAPTER):
        read_adapter(tmp_path / ADAPTER)


def test_load_trainable_state_rejects_misfit(trained_like) -> None:
    """Loading a state with a missing key or a wrong shape fails loudly."""
    # Prepare
    model, state = trained_like
    missing = dict(state)
    missing.pop("head.weight")
    wrong = dict(state)
    wrong["head.weight"] = np.zeros((3, 3), dtype=np.float32)
    # Execute / Assert
    with pytest.raises(ValueError, match="missing.*head.weight"):
        load_trainable_state(model, missing)
    with pytest.raises(ValueError, match="head.weight: shape"):
        load_trainable_state(model, wrong)
    load_trainable_state(model, state)  # the fixture's state is intact


def test_check_delta_accepts_well_formed() -> None:
    """A delta with the reference's keys, shapes and finite values passes."""
    ref = _small_state()
    check_delta(subtract(ref, {k: np.ones_like(v) for k, v in ref.items()}), ref)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("head.weight"), "keys differ"),
        (lambda d: d.update(extra=np.zeros(1, dtype=np.float32)), "keys differ"),
        (lambda d: d.update({"head.weight": np.zeros((4, 5), dtype=np.float32)}), r"head\.weight: shape"),
        (lambda d: d["a.lora_A"].__setitem__((0, 0), np.nan), "a.lora_A: non-finite"),
        (lambda d: d["item_bias.weight"].__setitem__((1, 0), np.inf), "item_bias.weight: non-finite"),
    ],
    ids=["missing-key", "extra-key", "wrong-shape", "nan", "inf"],
)
def test_check_delta_rejects(mutate, message: str) -> None:
    """A delta with a missing or extra key, a wrong shape, NaN or inf is rejected with a ValueError saying why."""
    # Prepare
    ref = _small_state()
    delta = {k: v.copy() for k, v in ref.items()}
    mutate(delta)
    # Execute / Assert
    with pytest.raises(ValueError, match=message):
        check_delta(delta, ref)


def test_metrics_record_round_trip() -> None:
    """RankingMetrics -> MetricRecord -> RankingMetrics is lossless; extra keys ride along and are ignored."""
    # Prepare
    m = RankingMetrics(num_items=50)
    m.add(0, sampled=1, topk=np.array([3, 1, 4, 1, 5]))
    m.add(20, sampled=None, topk=np.array([9, 2, 6]))
    # Execute
    rec = metrics_to_record(m, **{"eval-seconds": 1.5})
    back = record_to_metrics(rec)
    # Assert
    assert rec["eval-seconds"] == 1.5
    assert back == m
    assert back.summary() == m.summary()


def test_metrics_record_round_trip_empty_recommended() -> None:
    """A client with no evaluated user sends no `recommended` key, and it reads back as an empty set."""
    # Prepare
    m = RankingMetrics(num_items=50)
    # Execute
    rec = metrics_to_record(m)
    back = record_to_metrics(rec)
    # Assert
    assert "recommended" not in rec
    assert back == m and back.recommended == set()
    assert back.merge(RankingMetrics(num_items=50)) == m


def test_weighted_mean_equal_weights_is_mean() -> None:
    """Equal weights give the plain element-wise mean of the deltas."""
    # Prepare
    rng = np.random.default_rng(1)
    deltas = [{"w": rng.standard_normal((3, 2)).astype(np.float32)} for _ in range(4)]
    # Execute
    out = weighted_mean(deltas, [1.0] * 4)
    # Assert
    assert out["w"].dtype == np.float32
    np.testing.assert_allclose(out["w"], np.mean([d["w"] for d in deltas], axis=0), rtol=1e-6, atol=1e-7)


def test_weighted_mean_with_weights_by_hand() -> None:
    """Weights 1 and 3 give (1*a + 3*b) / 4, written out by hand."""
    # Prepare
    a = {"w": np.array([1.0, 0.0, -2.0], dtype=np.float32)}
    b = {"w": np.array([5.0, 4.0, 2.0], dtype=np.float32)}
    # Execute
    out = weighted_mean([a, b], [1.0, 3.0])
    # Assert
    np.testing.assert_array_equal(out["w"], np.array([4.0, 3.0, 1.0], dtype=np.float32))


@pytest.mark.parametrize(
    ("deltas", "weights", "message"),
    [([], [], "no client deltas"), ([{"w": np.zeros(1)}], [1.0, 1.0], "1 deltas but 2 weights"),
     ([{"w": np.zeros(1)}], [0.0], "sum to > 0")],
    ids=["empty", "length-mismatch", "zero-weights"],
)
def test_weighted_mean_rejects(deltas, weights, message: str) -> None:
    """No deltas, a weight count that does not match, or weights summing to 0 are errors."""
    with pytest.raises(ValueError, match=message):
        weighted_mean(deltas, weights)


def test_apply_update() -> None:
    """global + server_lr * mean delta, per tensor, in float32; the inputs are not modified."""
    # Prepare
    g = {"w": np.array([1.0, 2.0], dtype=np.float32), "b": np.array([0.5], dtype=np.float32)}
    d = {"w": np.array([0.5, -1.0], dtype=np.float32), "b": np.array([2.0], dtype=np.float32)}
    g_copy = {k: v.copy() for k, v in g.items()}
    # Execute
    out = apply_update(g, d, server_lr=0.5)
    # Assert
    np.testing.assert_array_equal(out["w"], np.array([1.25, 1.5], dtype=np.float32))
    np.testing.assert_array_equal(out["b"], np.array([1.5], dtype=np.float32))
    assert all(v.dtype == np.float32 for v in out.values())
    _assert_bit_exact(g_copy, g)
    np.testing.assert_array_equal(apply_update(g, d, server_lr=1.0)["w"], g["w"] + d["w"])
