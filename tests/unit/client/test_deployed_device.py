"""Deployed devices in one process: each node holds one user's history file and its own state directory, the
server sends the public catalog over Flower, rounds are answered once per (run, round) even across a crash, and
`fedrec recommend --state-dir` works offline from what a device kept."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Message, MessageType
from typer.testing import CliRunner

from fedrec.cli.main import app as cli
from fedrec.client import client_app
from fedrec.client.device_state import DeviceState
from fedrec.server.deployment import start_deployment
from fedrec.server.federation import messages, run_federation
from fedrec.server.secure_aggregation import SecureRound
from fedrec.shared.config import ConfigError, RunConfig
from fedrec.shared.data.types import Catalog
from fedrec.shared.model.build import build_model
from fedrec.shared.model.recommender import trainable_state
from fedrec.shared.privacy.keys import fingerprint, load_private_key
from fedrec.shared.privacy.ledger import PrivacyLedger
from fedrec.shared.protocol import device_error_reason, record_to_state
from fedrec.shared.run_dir import read_adapter
from fedrec.simulations.inprocess import InProcessGrid

runner = CliRunner()
USERS = 3


@pytest.fixture(scope="module")
def deployed_run(world: dict) -> Path:
    """Two rounds of a deployed federation of 3 devices: record DP, user DP and SecAgg+ on."""
    grid = InProcessGrid(client_app.app, USERS, node_configs=world["nodes"])
    return run_federation(grid, world["cfg"])


def test_deployed_rounds_aggregate_every_device_and_evaluate_on_their_own_items(deployed_run: Path) -> None:
    """Both rounds unmask the sum of all 3 devices; every device evaluates on the item held out of its own file."""
    rounds = json.loads((deployed_run / "rounds.json").read_text())
    assert [r["status"] for r in rounds] == ["ok", "ok"]
    assert [r["updates"] for r in rounds] == [USERS, USERS]
    assert all(r["eval_users"] == USERS and r["eval_failed"] == 0 for r in rounds)
    doc = json.loads((deployed_run / "config.json").read_text())
    assert doc["population"] == USERS
    assert not (deployed_run / "devices").exists()  # deployed devices keep their state in their own dirs


def test_each_device_stores_the_run_catalog_and_a_signed_ledger(world: dict, deployed_run: Path) -> None:
    """catalog.json on a device is the run's byte for byte; the ledger subject is the device id or its key's
    fingerprint (never partition-N); the report verifies; the round record is private (0600)."""
    for i, node in enumerate(world["nodes"]):
        d = Path(node["state-dir"])
        assert (d / "catalog.json").read_bytes() == (deployed_run / "catalog.json").read_bytes()
        ledger = PrivacyLedger.load(d / "record-ledger.json")
        assert ledger.rounds() == [1, 2] and len(ledger) == 2
        key = fingerprint(load_private_key(d / "device-ed25519.pem"))
        assert ledger.subject == ("alice-phone" if i == 0 else key)
        result = runner.invoke(cli, ["audit", "verify", str(d / "privacy-report.json"), "--public-key",
                                     str(d / "device-ed25519.pem.pub")], terminal_width=200)
        assert result.exit_code == 0, result.output
        record = DeviceState(d).load_round()
        assert record is not None and (record.run_id, record.server_round) == (deployed_run.name, 2)
        assert stat.S_IMODE((d / "round-update.safetensors").stat().st_mode) == 0o600
        final = read_adapter(deployed_run / "adapter.safetensors")
        kept = read_adapter(d / "adapter.safetensors")  # from the last evaluate message: the final global
        assert kept.keys() == final.keys() and all(np.array_equal(kept[k], final[k]) for k in final)


def test_recommend_offline_from_a_device_state_dir(world: dict, deployed_run: Path) -> None:
    """`fedrec recommend --state-dir` needs nothing but the state directory and a history file."""
    node = world["nodes"][1]
    result = runner.invoke(cli, ["recommend", "--state-dir", node["state-dir"], "--history", node["data-path"],
                                 "--top-k", "3"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "Top 3 for" in result.output
    both = runner.invoke(cli, ["recommend", "--state-dir", node["state-dir"], "--run", str(deployed_run),
                               "--history", node["data-path"]], terminal_width=200)
    assert both.exit_code == 2 and "exactly one of --run" in both.output


# -- one device, message by message ------------------------------------------------------------------------------

def _device(world: dict, tmp_path: Path, **extra: object) -> dict:
    return {**world["nodes"][1], "state-dir": str(tmp_path / "device"), **extra}


def _train_message(cfg: RunConfig, catalog: Catalog, grid: InProcessGrid, run: Path, *, session_seed: int | None
                   ) -> Message:
    """Round 1's train message for node 1, as the server builds it (with a SecAgg+ setup when `cfg` has it)."""
    state = {k: v.numpy().copy() for k, v in trainable_state(build_model(cfg, catalog, cached=False)).items()}
    [msg] = messages(MessageType.TRAIN, [1], state, cfg, 1, run)
    if cfg.secagg.enabled:
        secure = SecureRound(cfg, 1, max_clients=1)
        secure.session = bytes([session_seed or 0]) * 16  # a chosen session, so a re-delivery can repeat it
        secure.attach([msg])
    return msg


def _fresh(msg: Message) -> Message:
    """The same message again (a new delivery: new message id, same content)."""
    return Message(msg.content, dst_node_id=msg.metadata.dst_node_id, message_type=msg.metadata.message_type)


def _ready_grid(world: dict, node: dict) -> InProcessGrid:
    """A fresh device process (new Context) holding the run's catalog."""
    grid = InProcessGrid(client_app.app, 1, node_configs=[node])
    assert start_deployment(grid, world["cfg"], [1], world["catalog"]) == [1]
    return grid


@pytest.mark.parametrize("kill", ["before-commit", "after-commit", "after-ledger"])
def test_a_device_killed_mid_round_is_charged_exactly_once(world: dict, tmp_path: Path, monkeypatch, caplog,
                                                           kill) -> None:
    """Kill the round before the commit, between the commit and the ledger file, or after the ledger file (before
    the reply); a re-delivery to a restarted device leaves exactly one ledger entry for the round, and every later
    delivery resends the same update."""
    cfg = world["cfg"].updated({"secagg.enabled": False, "user_dp.enabled": False})
    node = _device(world, tmp_path)
    store = DeviceState(Path(node["state-dir"]))
    grid = _ready_grid(world, node)
    msg = _train_message(cfg, world["catalog"], grid, tmp_path / "run-x", session_seed=None)

    target = "save_round" if kill == "before-commit" else "save_ledger"
    original = getattr(DeviceState, target)

    def killed(self, *args, **kwargs):
        if kill == "after-ledger":
            original(self, *args, **kwargs)
        raise RuntimeError("killed")

    monkeypatch.setattr(DeviceState, target, killed)
    [crashed] = grid.send_and_receive([_fresh(msg)])
    assert crashed.has_error() and crashed.error.reason == device_error_reason("internal")
    assert "RuntimeError: killed" in caplog.text  # the detail stays in the device's log
    monkeypatch.setattr(DeviceState, target, original)
    charged = 0 if kill == "before-commit" else 1
    on_disk = PrivacyLedger.load(store.ledger_path) if store.ledger_path.exists() else None
    assert (len(on_disk) if on_disk else 0) == (1 if kill == "after-ledger" else 0)
    assert (store.load_round() is not None) == bool(charged)

    replies = []
    for _ in range(2):  # restarted twice: a new Context (process) with the same state directory
        [reply] = _ready_grid(world, node).send_and_receive([_fresh(msg)])
        assert not reply.has_error(), reply.error.reason
        replies.append(record_to_state(reply.content["arrays"]))
    ledger = PrivacyLedger.load(store.ledger_path)
    assert ledger.rounds() == [1] and len(ledger) == 1
    stored = store.load_round().update
    for r in replies:
        assert r.keys() == stored.keys() and all(np.array_equal(r[k], stored[k]) for k in stored)


def test_secure_aggregation_replays_only_in_the_same_session(world: dict, tmp_path: Path, monkeypatch,
                                                             caplog) -> None:
    """A committed round re-delivered in its own SecAgg+ session is answered again (keys, no charge); the same round
    in another session is refused, so the same delta never enters two sums."""
    cfg = world["cfg"]
    node = _device(world, tmp_path)
    store = DeviceState(Path(node["state-dir"]))
    grid = _ready_grid(world, node)
    msg = _train_message(cfg, world["catalog"], grid, tmp_path / "run-y", session_seed=1)
    original = client_app.secure_aggregation.advertise

    def killed(*args, **kwargs):
        raise RuntimeError("killed before the keys went out")

    monkeypatch.setattr(client_app.secure_aggregation, "advertise", killed)
    [crashed] = grid.send_and_receive([_fresh(msg)])
    assert crashed.has_error()
    monkeypatch.setattr(client_app.secure_aggregation, "advertise", original)

    [again] = _ready_grid(world, node).send_and_receive([_fresh(msg)])
    assert not again.has_error(), again.error.reason
    assert "secagg" in again.content and "arrays" not in again.content  # public keys only
    other = _train_message(cfg, world["catalog"], grid, tmp_path / "run-y", session_seed=2)
    [refused] = _ready_grid(world, node).send_and_receive([_fresh(other)])
    assert refused.has_error() and refused.error.reason == device_error_reason("replayed")
    assert "second session" in caplog.text
    assert len(PrivacyLedger.load(store.ledger_path)) == 1


def test_a_device_refuses_a_round_for_another_catalog(world: dict, tmp_path: Path, caplog) -> None:
    """Train/evaluate configs name the catalog's hash; a device holding another catalog fails clearly."""
    cfg = world["cfg"].updated({"secagg.enabled": False})
    node = _device(world, tmp_path)
    grid = _ready_grid(world, node)
    msg = _train_message(cfg, world["catalog"], grid, tmp_path / "run-z", session_seed=None)
    msg.content["config"]["catalog-sha256"] = "0" * 64
    [reply] = grid.send_and_receive([msg])
    assert reply.has_error() and reply.error.reason == device_error_reason("catalog")
    assert "is not the run's" in caplog.text


def test_deployed_device_configuration_errors_are_clear(world: dict, tmp_path: Path, caplog) -> None:
    """No state-dir, or a shared history file without `user`: each an error code to the server, and a clear
    error naming the setting in the device's own log."""
    catalog = world["catalog"]
    no_state = {"data-path": world["nodes"][0]["data-path"]}
    grid = InProcessGrid(client_app.app, 1, node_configs=[no_state])
    with pytest.raises(Exception, match="(?s)no device stored the catalog.*fedrec device error state"):
        start_deployment(grid, world["cfg"], [1], catalog)
    assert "needs node config 'state-dir'" in caplog.text

    node = _device(world, tmp_path, **{"data-path": world["nodes"][-1]["data-path"]})  # two users, none chosen
    grid = _ready_grid(world, node)
    msg = _train_message(world["cfg"].updated({"secagg.enabled": False}), catalog, grid, tmp_path / "r",
                         session_seed=None)
    [reply] = grid.send_and_receive([msg])
    assert reply.has_error() and reply.error.reason == device_error_reason("data")
    assert "holds 2 users" in caplog.text and "'user'" in caplog.text


def test_a_malformed_history_line_reaches_the_server_as_an_error_code_only(world: dict, tmp_path: Path,
                                                                           caplog) -> None:
    """A device whose history has a malformed line fails with the "data" code: neither the file's path nor the
    line's content reaches the server (they are in the device's own log)."""
    history = tmp_path / "alice-private-history.csv"
    history.write_text("user,item,weight\nalice,Secret Artist,not-a-number\n", encoding="utf-8")
    node = _device(world, tmp_path, **{"data-path": str(history)})
    grid = _ready_grid(world, node)
    msg = _train_message(world["cfg"], world["catalog"], grid, tmp_path / "r", session_seed=3)
    [reply] = grid.send_and_receive([msg])
    assert reply.has_error() and reply.error.reason == device_error_reason("data")
    assert "alice-private-history" in caplog.text and "not-a-number" in caplog.text


def test_deployment_nodes_setting() -> None:
    """Validated, and a deployment has no simulated canary clients."""
    with pytest.raises(ConfigError, match="run.deployment_nodes"):
        RunConfig.from_mapping({"run.deployment_nodes": -1})
    with pytest.raises(ConfigError, match="audit.canary_clients"):
        RunConfig.from_mapping({"run.deployment_nodes": 3, "audit.canary_clients": 2})


def test_audit_role_query_answers_for_simulated_and_deployed_nodes(world: dict, tmp_path: Path) -> None:
    """The query handler dispatches on what is asked: a deployed device is never an audit canary client."""
    from flwr.app import ConfigRecord, RecordDict

    from fedrec.shared.protocol import QUERY_CANARY_CLIENTS, ROLE_METRIC

    def roles(grid: InProcessGrid, n: int) -> list[int]:
        asks = [Message(RecordDict({"config": ConfigRecord({QUERY_CANARY_CLIENTS: 1})}), dst_node_id=i + 1,
                        message_type=MessageType.QUERY) for i in range(n)]
        return [int(r.content["metrics"][ROLE_METRIC]) for r in grid.send_and_receive(asks)]

    assert roles(InProcessGrid(client_app.app, 3), 3) == [-1, -1, 0]  # the last partition is the canary client
    assert roles(InProcessGrid(client_app.app, 1, node_configs=[_device(world, tmp_path)]), 1) == [-1]
