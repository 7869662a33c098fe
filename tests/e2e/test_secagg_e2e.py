"""End to end: a real Flower simulation (Ray) with secure aggregation and user-level DP, with dropouts, once with
the server adding the noise and once with the clients adding Skellam noise shares (`user_dp.noise = distributed`).

The server's Grid is wrapped so that, as seen from the protocol, one client is lost after sharing its keys in
round 1 (its masked-input request never arrives: the round must complete without it) and three of six clients
are lost before unmasking in round 2 (fewer than t = 4 survive: the round must abort and release nothing). The
wrapper also records every reply the server receives. In distributed mode the noise is accounted for
ceil(0.5 x 6) = 3 survivors, so round 1's five carry more noise than accounted and round 2 fails at the SecAgg+
threshold, before the server can unmask anything.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from scipy import stats
from typer.testing import CliRunner

import fedrec.server.server_app as server_app
from fedrec.cli.main import app as cli
from fedrec.shared.config import RunConfig
from fedrec.shared.privacy.ledger import PrivacyLedger
from fedrec.shared.run_dir import private_dir
from fedrec.shared.secagg import wire
from fedrec.simulations.simulate import simulate


class LossyGrid:
    """Delegates to Flower's Grid; loses some secure-aggregation requests; records every reply received."""

    def __init__(self, grid: Any) -> None:
        self._grid = grid
        self.secure_round = 0
        self.lost: dict[int, list[int]] = {}  # secure round -> nodes whose request was lost
        self.received: list[Any] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    def send_and_receive(self, messages: Any, *, timeout: float | None = None) -> Any:
        messages = list(messages)
        kind = messages[0].metadata.message_type if messages else ""
        if kind == wire.MESSAGE_TYPES[wire.SHARE_KEYS]:
            self.secure_round += 1
        lose = {(1, wire.MESSAGE_TYPES[wire.MASKED_INPUT]): 1, (2, wire.MESSAGE_TYPES[wire.UNMASK]): 3}.get(
            (self.secure_round, kind), 0)
        if lose:
            self.lost[self.secure_round] = [m.metadata.dst_node_id for m in messages[:lose]]
            messages = messages[lose:]
        replies = list(self._grid.send_and_receive(messages, timeout=timeout))
        self.received.extend(replies)
        return replies


@pytest.fixture(scope="module", params=["server", "distributed"])
def secure_run(request, tmp_path_factory):
    # Full participation (6 of 6 users: the only fixed-size cohort user-level DP accepts): k = 5, t = 4.
    cfg = RunConfig.from_mapping({"data.source": "synthetic:users=6,items=60,seed=5", "run.rounds": 2,
                                  "run.clients_per_round": 6, "eval.every": 2, "user_dp.enabled": True,
                                  "user_dp.noise_multiplier": 1.0, "user_dp.clip_norm": 0.5,
                                  "train.bias_learning_rate": 0.5, "secagg.enabled": True,
                                  # the adapter rounds alone: the release phase's secure sums would take the
                                  # first two secure rounds LossyGrid counts (and loses requests in)
                                  "hybrid.releases": "", "user_dp.noise": request.param,
                                  "user_dp.survivor_fraction": 0.5,
                                  "run.dir": str(tmp_path_factory.mktemp("runs")), "run.name": "secagg"})
    grids: list[LossyGrid] = []
    original = server_app.run_federation

    def run_lossy(grid, run_cfg, on_event=None, resume=None):
        grids.append(LossyGrid(grid))
        return original(grids[-1], run_cfg, on_event=on_event, resume=resume)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(server_app, "run_federation", run_lossy)
        run = simulate(cfg, num_cpus=2)
    return cfg, run, grids[0]


def test_round_with_a_dropout_completes_and_an_unrecoverable_one_aborts(secure_run):
    """Round 1 sums the 5 clients that sent masked inputs; round 2 has 3 < t survivors and releases nothing."""
    cfg, run, grid = secure_run
    rounds = json.loads((run / "rounds.json").read_text())
    first, second = rounds
    assert first["status"] == "ok" and first["updates"] == 5
    assert (first["secagg_neighbours"], first["secagg_threshold"]) == (5, 4)
    assert [first[f"secagg_{s}"] for s in ("advertise_keys", "share_keys", "masked_input", "unmask")] == [6, 6, 5, 5]
    assert second["status"].startswith("aborted: unmask: 3 of 6 clients answered; t = 4 needed")
    assert second["updates"] == 0 and "eval_ndcg@10" in second  # the old adapter is still evaluated
    if cfg.user_dp.noise == "distributed":  # the survivors' noise: 5 shares of V / 3 each, std z S sqrt(5 / 3)
        assert first["ddp_min_survivors"] == 3 and first["ddp_padded_dim"] & (first["ddp_padded_dim"] - 1) == 0
        assert first["ddp_noise_std"] == pytest.approx(1.0 * 0.5 * (5 / 3) ** 0.5, rel=1e-9)
    clients = (private_dir(run) / "clients.csv").read_text()  # per-client rows are server-private under DP
    assert f"{grid.lost[1][0]}," in clients and "dropped at masked-input: no reply" in clients


def test_only_released_rounds_enter_the_ledger_and_the_report_verifies(secure_run):
    """One release (round 1, 5 clients); the signed report lists round 2 as without release and states the
    secure-aggregation trust model; `fedrec audit verify` accepts it."""
    _, run, _ = secure_run
    ledger = PrivacyLedger.load(run / "ledger-user.json")
    assert ledger.rounds() == [1]
    report = json.loads((run / "privacy-report.json").read_text())
    tm = report["scope"]["trust_model"]
    assert "SecAgg+" in tm["secure_aggregation"] and "t = 4" in tm["secure_aggregation"]
    assert tm["colluding_clients_max"] == 3
    distributed = report["user_level"]["accounting"]["accountant"] == "rdp-distributed"
    assert ("with their Skellam noise shares in it" if distributed else "exact sum") in tm["notes"]
    assert report["user_level"]["composition"]["rounds_without_release"] == [2]
    if distributed:  # one Skellam event, zero-out adjacency, no amplification claimed
        assert report["user_level"]["adjacency"] == "replace_special"
        assert report["user_level"]["sampling"]["method"] == "none"
        assert [e.event.__class__.__name__ for e in ledger] == ["SkellamDpEvent"]
    result = CliRunner().invoke(cli, ["audit", "verify", str(run / "privacy-report.json"), "--public-key",
                                      str(run / "server-ed25519.pub")], terminal_width=200)
    assert result.exit_code == 0, result.output


def test_the_server_never_receives_a_delta(secure_run):
    """No reply carries the adapter; every masked upload is uniform-looking ring words (chi-square on bytes)."""
    _, _, grid = secure_run
    assert not any("arrays" in r.content.array_records for r in grid.received if not r.has_error())
    masked = [r.content.array_records[wire.MASKED_RECORD]["masked"].numpy() for r in grid.received
              if not r.has_error() and wire.MASKED_RECORD in r.content.array_records]
    # rounds 1 and 2 in the 32-bit ring of the adapter; the evaluation after round 2 in the 64-bit ring of its sums
    assert [m.dtype for m in masked] == [np.dtype(np.uint32)] * (5 + 6) + [np.dtype(np.uint64)] * 6
    for m in masked:
        counts = np.bincount(m.view(np.uint8), minlength=256)
        assert stats.chisquare(counts).pvalue > 1e-4
