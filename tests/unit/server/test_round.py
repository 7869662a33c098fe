"""One training round: each client is counted (and used) at most once; under a privacy setting no per-client
telemetry reaches the server."""

from __future__ import annotations

import math

import pytest

from fedrec.server.round import run_round
from fedrec.shared.protocol import CANARY_METRIC, DECLINED_METRIC, RECORD_EPSILON_METRIC


class Redelivering:
    """Wraps a grid so that each train round's first reply arrives twice (a re-delivered reply)."""

    def __init__(self, grid) -> None:  # noqa: ANN001
        self._grid = grid

    def __getattr__(self, name: str):  # noqa: ANN204
        return getattr(self._grid, name)

    def send_and_receive(self, messages, *, timeout=None):  # noqa: ANN001
        replies = list(self._grid.send_and_receive(messages, timeout=timeout))
        kinds = {m.metadata.message_type for m in messages}
        return replies + replies[:1] if kinds == {"train"} else replies


@pytest.mark.parametrize("fail", [True, False], ids=["failed-client", "ok-client"])
def test_a_client_is_counted_and_used_once_per_round(small_federation, monkeypatch, fail):
    """A client whose reply arrives twice is one failure (not two) when it failed, and one contribution (not a
    second copy of its delta in the sum) when it succeeded."""
    import fedrec.client.train as train_job

    grid, fed = small_federation()
    if fail:
        original = train_job.train

        def broken(msg, context):  # noqa: ANN001, ANN202
            if int(context.node_config["partition-id"]) == 0:
                raise RuntimeError("broken device")
            return original(msg, context)

        monkeypatch.setattr(train_job, "train", broken)
    outcome = run_round(Redelivering(grid), fed, 1, fed.adapter_task(1))
    assert outcome.row["sampled"] == 6
    assert (outcome.row["failed"], outcome.row["updates"]) == ((1, 5) if fail else (0, 6))
    assert len([r for r in outcome.client_rows if r["phase"] == "train"]) == 6


@pytest.mark.parametrize("settings", [{"record_dp.enabled": True, "record_dp.delta": 1e-3},
                                      {"user_dp.enabled": True, "run.client_sampling": "poisson",
                                       "run.clients_per_round": 6, "audit.canary_clients": 2},
                                      {"secagg.enabled": True}], ids=["record-dp", "user-dp", "secagg"])
def test_under_a_privacy_setting_no_per_client_telemetry_reaches_the_server(small_federation, settings):
    """Train replies carry only the decline flag, the record-level epsilon and the canary flag: no training
    seconds, step count, peak memory, loss or example count; the round row has no per-client figure."""
    grid, fed = small_federation(**settings)
    outcome = run_round(grid, fed, 1, fed.adapter_task(1))
    assert outcome.row["updates"] >= 1
    train_replies = [r for r in grid.received if r.metadata.message_type == "train" and not r.has_error()]
    assert train_replies
    for reply in train_replies:
        sent = set(reply.content.get("metrics") or {})
        assert sent <= {DECLINED_METRIC, RECORD_EPSILON_METRIC, CANARY_METRIC}, sent
    assert math.isnan(outcome.row["client_peak_rss_mb"]) and math.isnan(outcome.row["train_loss"])
    assert not any("seconds" in r for r in outcome.client_rows)


def test_without_a_privacy_setting_telemetry_is_still_sent(small_federation):
    """The control: the same round with no privacy setting reports each client's seconds and peak memory."""
    grid, fed = small_federation()
    outcome = run_round(grid, fed, 1, fed.adapter_task(1))
    assert outcome.row["client_peak_rss_mb"] > 0 and all("seconds" in r for r in outcome.client_rows)


def test_the_factored_gram_sum_equals_the_sum_of_outer_products() -> None:
    """OuterSum (batched B^T B) gives the upper triangle of sum_i x_i x_i^T, however the batches fall."""
    import numpy as np

    from fedrec.server.round import OuterSum

    rng = np.random.default_rng(0)
    xs = [rng.integers(0, 2, size=7).astype(np.float32) for _ in range(OuterSum.BATCH + 5)]
    acc = OuterSum()
    for x in xs:
        acc.add({"cooccurrence": x})
    want = sum(np.outer(x, x).astype(np.float64) for x in xs)
    np.testing.assert_allclose(acc.upper()["cooccurrence"], want[np.triu_indices(7)])
