"""Property tests of the pure SecAgg+ protocol: exact sums under dropouts, clean aborts beyond the threshold."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedrec.shared.secagg.errors import SecAggAborted
from fedrec.shared.secagg.protocol import STAGES

SLOW = settings(deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def ring_inputs(draw, n: int, d: int, bits: int) -> dict[int, np.ndarray]:
    dtype = np.uint32 if bits == 32 else np.uint64
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    return {100 + c: rng.integers(0, 2**bits, size=d, dtype=np.uint64).astype(dtype) for c in range(n)}


@st.composite
def rounds(draw, max_clients: int = 9):
    """n clients (ids 100..), d-word inputs in a 32- or 64-bit ring, and who drops at each stage."""
    n = draw(st.integers(2, max_clients))
    d = draw(st.integers(1, 48))
    bits = draw(st.sampled_from([32, 64]))
    left = list(range(100, 100 + n))
    drop: dict[str, set[int]] = {}
    for stage in STAGES:
        # mostly a few dropouts per stage (the interesting side of t), sometimes most of the clients
        most = draw(st.sampled_from([max(0, len(left) // 4), max(0, len(left) // 4), max(0, len(left) - 1)]))
        gone = set(draw(st.lists(st.sampled_from(left), unique=True, max_size=most)) if left else [])
        drop[stage] = gone
        left = [c for c in left if c not in gone]
    return ring_inputs(draw, n, d, bits), drop, bits


def plain_sum(inputs: dict[int, np.ndarray], who: list[int]) -> np.ndarray:
    total = np.zeros_like(next(iter(inputs.values())))
    for c in who:
        total = np.add(total, inputs[c], dtype=total.dtype)
    return total


@settings(SLOW, max_examples=100)
@given(case=rounds())
def test_complete_graph_sum_is_exact_or_round_aborts_with_reason(secagg_round, case) -> None:
    """Complete graph (n <= 10): the round completes iff every stage keeps t = floor(n1/2) + 1 clients, where n1
    clients sent keys; then the ring sum equals the plaintext sum over exactly the clients whose masked input
    arrived. Otherwise it raises SecAggAborted naming the stage and t."""
    # Prepare
    inputs, drop, bits = case
    u1 = [c for c in inputs if c not in drop["advertise-keys"]]
    u2 = [c for c in u1 if c not in drop["share-keys"]]
    u3 = [c for c in u2 if c not in drop["masked-input"]]
    u4 = [c for c in u3 if c not in drop["unmask"]]
    t = len(u1) // 2 + 1
    completes = len(u1) >= 2 and min(len(u2), len(u3), len(u4)) >= t
    # Execute / Assert
    if completes:
        result = secagg_round(inputs, ring_bits=bits, drop=drop, roundtrip_state=True)
        assert result.server.threshold == t and result.server.degree == len(u1) - 1
        assert result.survivors == sorted(u3)
        assert np.array_equal(result.total, plain_sum(inputs, u3))
        assert not result.refusals
    else:
        with pytest.raises(SecAggAborted, match=r"^(advertise-keys|share-keys|masked-input|unmask): .*t = \d+"):
            secagg_round(inputs, ring_bits=bits, drop=drop)


@settings(SLOW, max_examples=20)
@given(n=st.integers(11, 18), degree=st.sampled_from([4, 6]), data=st.data())
def test_sparse_graph_sum_is_exact_whenever_the_round_completes(secagg_round, n, degree, data) -> None:
    """k-regular graph with k << n: dropouts anywhere; a completed round sums exactly the survivors' inputs and
    an aborted one names the stage and the missing count."""
    # Prepare
    inputs = ring_inputs(data.draw, n, data.draw(st.integers(1, 32)), 32)
    ids = list(inputs)
    drop = {stage: set(data.draw(st.lists(st.sampled_from(ids), unique=True, max_size=2))) for stage in STAGES}
    # Execute
    try:
        result = secagg_round(inputs, drop=drop, degree=degree)
    except SecAggAborted as e:
        # Assert (abort)
        assert e.stage in STAGES and ("t = " in e.reason or "disconnected" in e.reason)
        return
    # Assert (completed)
    gone = drop["advertise-keys"] | drop["share-keys"] | drop["masked-input"] | set(result.refusals)
    assert result.server.degree == degree
    assert set(result.survivors) <= set(ids) - gone
    assert np.array_equal(result.total, plain_sum(inputs, result.survivors))


def test_below_threshold_dropouts_at_every_stage_complete(secagg_round) -> None:
    """10 clients, t = 6: one dropout at each of the four stages leaves 6 in U4 and the sum of the 7 in U3."""
    # Prepare
    rng = np.random.default_rng(1)
    inputs = {c: rng.integers(0, 2**32, size=200, dtype=np.uint64).astype(np.uint32) for c in range(10)}
    drop = {"advertise-keys": {0}, "share-keys": {1}, "masked-input": {2}, "unmask": {3}}
    # Execute
    result = secagg_round(inputs, drop=drop)
    # Assert
    assert result.server.threshold == 5 and result.server.counts == {"advertise-keys": 9, "share-keys": 8,
                                                                      "masked-input": 7, "unmask": 6}
    assert result.survivors == [3, 4, 5, 6, 7, 8, 9]
    assert np.array_equal(result.total, plain_sum(inputs, result.survivors))


def test_one_dropout_too_many_aborts_before_any_share_is_asked(secagg_round) -> None:
    """6 clients, t = 4: three lost before their masked input leaves 3 < t; the server aborts at that stage,
    before it has asked anyone for a share."""
    # Prepare
    inputs = {c: np.arange(5, dtype=np.uint32) for c in range(6)}
    # Execute / Assert
    with pytest.raises(SecAggAborted, match=r"masked-input: 3 of 6 clients answered; t = 4 needed") as info:
        secagg_round(inputs, drop={"masked-input": {0, 1, 2}})
    assert info.value.stage == "masked-input"


def test_single_client_never_aggregates_alone(secagg_round) -> None:
    """One client alone would hand the server its own input: aborted at the key stage."""
    with pytest.raises(SecAggAborted, match=r"advertise-keys: 1 client\(s\) sent usable keys.*t = 2"):
        secagg_round({7: np.zeros(3, dtype=np.uint32)})
