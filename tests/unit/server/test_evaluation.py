"""Federated evaluation: in the clear without a privacy setting, only as one secure sum under any of them."""

from __future__ import annotations

import pytest

from fedrec.server.evaluation import evaluate
from fedrec.shared.secagg import wire


@pytest.mark.parametrize("setting", ["record_dp.enabled", "user_dp.enabled", "secagg.enabled"])
def test_under_a_privacy_setting_evaluation_is_one_secure_sum_with_the_same_figures(small_federation, setting):
    """Same adapter, same users: the secure evaluation gives the plain one's figures (coverage included), and no
    evaluate reply the server receives carries a metric, a top-10 list or a timing: only SecAgg+ keys, masked
    words and shares."""
    extra = {"run.client_sampling": "poisson"} if setting == "user_dp.enabled" else {}
    grid, plain = small_federation()
    expected = evaluate(grid, plain, 1, [])
    grid, fed = small_federation(**{setting: True, **extra})
    fed.global_state = plain.global_state  # the same adapter
    rows: list[dict] = []
    got = evaluate(grid, fed, 1, rows)
    assert got["eval_secure"] == "SecAgg+ sum of 6 devices" and got["eval_failed"] == 0
    for key in ("eval_users", "eval_hr@10", "eval_ndcg@10", "eval_hr@10_sampled", "eval_ndcg@10_sampled",
                "eval_coverage@10"):
        assert got[key] == pytest.approx(expected[key], abs=1e-9), key
    evaluated = [r for r in grid.received if r.metadata.message_type.startswith("evaluate")]
    assert len(evaluated) == 6
    for reply in evaluated:
        assert "metrics" not in reply.content and set(reply.content.config_records) == {wire.RECORD}
    assert {r["phase"] for r in rows} == {"evaluate", "evaluate-secagg"} and not any("seconds" in r for r in rows)


def test_a_secure_evaluation_of_one_device_aborts_and_publishes_no_figure(small_federation):
    """One device alone would be its own total: the protocol's threshold refuses it, and no figure is reported."""
    grid, fed = small_federation(**{"secagg.enabled": True, "eval.fraction": 0.1})
    got = evaluate(grid, fed, 1, [])
    assert got["eval_secure"].startswith("aborted: advertise-keys") and "eval_ndcg@10" not in got
