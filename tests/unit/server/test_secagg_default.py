"""Issue 17: with user-level DP on and secure aggregation left at its default, the server never holds an
individual update: the round goes through the SecAgg+ collector and no reply carries a delta in the clear."""

from __future__ import annotations

import numpy as np

from fedrec.server.round import run_round
from fedrec.server.secure_aggregation import SecureCollector
from fedrec.shared.secagg import wire

ARRAYS_KEY = "arrays"  # the plain reply's delta (fedrec.shared.protocol)


def test_user_dp_under_the_defaults_never_sends_an_unmasked_update(small_federation) -> None:
    grid, fed = small_federation(**{"user_dp.enabled": True})  # nothing said about secure aggregation
    assert fed.cfg.secagg.mode == "auto" and fed.cfg.secagg.enabled
    task = fed.adapter_task(1)
    assert isinstance(fed.collector(task, 1), SecureCollector)
    outcome = run_round(grid, fed, 1, task)
    assert outcome.update is not None and outcome.row["updates"] == len(task.nodes)
    replies = [r for r in grid.received if not r.has_error()]
    assert {r.metadata.message_type for r in replies} >= {"train", *wire.MESSAGE_TYPES.values()}
    for reply in replies:
        records = dict(reply.content.array_records)
        assert ARRAYS_KEY not in records, reply.metadata.message_type
        # the only array a device sends is its masked upload: ring words, never float values
        assert set(records) <= {wire.MASKED_RECORD}
        for record in records.values():
            assert all(np.asarray(a.numpy()).dtype.kind == "u" for a in record.values())


def test_explicitly_off_sends_deltas_in_the_clear(small_federation) -> None:
    """The control: `secagg.enabled = false` with user-level DP is the plain collector (and a warning)."""
    grid, fed = small_federation(**{"user_dp.enabled": True, "secagg.enabled": False})
    assert not fed.cfg.secagg.enabled and "in the clear" in fed.cfg.secagg_warning
    outcome = run_round(grid, fed, 1, fed.adapter_task(1))
    assert outcome.update is not None
    assert any(ARRAYS_KEY in r.content.array_records for r in grid.received if r.metadata.message_type == "train")
