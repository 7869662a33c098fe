"""`fedrec server` before its run: every listed device key is registered before the SuperLink accepts a node, and
a cohort it would have to clamp is refused (asked for explicitly) or said (the default)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedrec.cli.main import app as cli
from fedrec.server import launch
from fedrec.server.flwr_control import list_nodes
from fedrec.server.launch_plan import ServerPlan
from fedrec.server.nodes import register_before_start
from fedrec.server.superlink import end_leftover_sessions, superlink_running
from fedrec.shared.config import RunConfig
from fedrec.shared.data.synthetic import make_synthetic
from fedrec.shared.edge.node_keys import make_node_key
from fedrec.shared.edge.processes import free_port
from fedrec.shared.edge.tls import make_certificates
from fedrec.shared.run_dir import write_catalog

runner = CliRunner()
needs_superlink = pytest.mark.skipif(not (Path(sys.executable).parent / "flower-superlink").is_file(),
                                     reason="flower-superlink not installed beside this interpreter")


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    write_catalog(tmp_path / "public", make_synthetic(num_users=2, num_items=12, seed=0).catalog)
    return tmp_path / "public" / "catalog.json"


def test_an_explicit_cohort_larger_than_the_devices_is_refused_before_anything_starts(tmp_path, catalog) -> None:
    result = runner.invoke(cli, ["server", "--data", str(catalog), "--nodes", "3", "--clients-per-round", "5",
                                 "--rounds", "2", "--work-dir", str(tmp_path / "w"), "--certs",
                                 str(tmp_path / "no-certs")], terminal_width=300)
    assert result.exit_code == 2, result.output
    assert "run.clients_per_round = 5, more than the 3 clients" in result.output.replace("\n", "")
    assert not (tmp_path / "w" / "superlink.log").exists()


def test_a_clamped_cohort_says_what_it_did() -> None:
    run = RunConfig.from_mapping({"run.clients_per_round": 10, "run.client_sampling": "poisson"}).run
    assert run.cohort_note(4) == ("run.clients_per_round = 10, more than the 4 clients: every round asks all 4 "
                                  "(Poisson sampling at q = 1: no amplification by sampling)")
    assert run.cohort_note(10) == "" and run.clients_sampled(4) == 4
    tiny = RunConfig.from_mapping({"run.fraction_train": 0.01}).run
    assert tiny.cohort_note(20) == "run.fraction_train = 0.01 of 20 clients is 0: every round asks 1 client instead"


def test_a_simulation_logs_a_clamped_cohort(tiny_llama_dir: Path, tmp_path: Path, caplog) -> None:
    from fedrec.client import client_app
    from fedrec.server.federation import Federation
    from fedrec.simulations.inprocess import InProcessGrid

    cfg = RunConfig.from_mapping({"data.source": "synthetic:users=3,items=30,seed=1", "model.name": str(tiny_llama_dir),
                                  "run.clients_per_round": 8, "run.dir": str(tmp_path), "run.name": "clamped"})
    with caplog.at_level(logging.WARNING, logger="fedrec.server"):
        Federation.start(InProcessGrid(client_app.app, 3), cfg)
    assert "run.clients_per_round = 8, more than the 3 clients: every round asks all 3" in caplog.text


def test_serve_registers_the_keys_before_it_starts_the_superlink(tmp_path, catalog, monkeypatch) -> None:
    """The order in `serve`: registration first, then the SuperLink that devices can reach."""
    calls: list[str] = []
    monkeypatch.setattr(launch, "register_before_start", lambda plan, keys, say: calls.append("register"))

    def superlink(plan, say):
        calls.append("superlink")
        raise RuntimeError("stop here")

    monkeypatch.setattr(launch, "superlink_running", superlink)
    key = make_node_key(tmp_path / "keys", "d0")
    plan = ServerPlan(certs=tmp_path, settings={"data.source": str(catalog), "run.deployment_nodes": 1,
                                                "run.clients_per_round": 1}, work_dir=tmp_path / "w",
                      register=[key.public])
    with pytest.raises(RuntimeError, match="stop here"):
        launch.serve(plan, say=lambda _: None)
    assert calls == ["register", "superlink"]


@needs_superlink
def test_keys_are_in_the_database_when_the_real_superlink_starts(tmp_path: Path) -> None:
    """Registered on the loopback SuperLink, every key is known to the TLS SuperLink from its first moment."""
    make_certificates(tmp_path / "certs")
    keys = [make_node_key(tmp_path / "keys", f"d{i}").public for i in range(2)]
    plan = ServerPlan(certs=tmp_path / "certs", settings={}, work_dir=tmp_path / "w", port=free_port(),
                      flwr_home=tmp_path / "w" / "flwr-home")
    plan.work_dir.mkdir()
    said: list[str] = []
    first = register_before_start(plan, keys, said.append)
    assert all(isinstance(n, int) for n in first.values()) and len(set(first.values())) == 2
    assert register_before_start(plan, keys[:1], said.append) == {keys[0]: None}  # registered before: no error
    with superlink_running(plan, said.append) as (_, flwr_home):
        nodes = list_nodes(flwr_home=flwr_home)
    assert sorted(n["node-id"] for n in nodes) == sorted(first.values())
    assert {n["status"] for n in nodes} == {"registered"}


def _heartbeat(database: Path, node_ids: list[int]) -> None:
    """What a connected SuperNode's heartbeat leaves in the database: online for 2 x 30 s from now."""
    from flwr.superlink.config_loader import get_objectstore_linkstate_factories
    from flwr.superlink.federation.noop_federation_manager import NoOpFederationManager

    state = get_objectstore_linkstate_factories(str(database), NoOpFederationManager())[1].state()
    assert all(state.acknowledge_node_heartbeat(n, 30.0) for n in node_ids)
    state._engine.dispose()


@needs_superlink
def test_a_restarted_superlink_starts_with_no_device_online(tmp_path: Path) -> None:
    """Issue 16: the devices of the previous run were online when its SuperLink stopped; the next SuperLink on the
    same database must not count them (or refuse their keys) until they really reconnect."""
    make_certificates(tmp_path / "certs")
    keys = [make_node_key(tmp_path / "keys", f"d{i}").public for i in range(2)]
    plan = ServerPlan(certs=tmp_path / "certs", settings={}, work_dir=tmp_path / "w", port=free_port(),
                      flwr_home=tmp_path / "w" / "flwr-home")
    plan.work_dir.mkdir()
    assert end_leftover_sessions(plan.work_dir / "superlink.db") == []  # no database yet: nothing, none created
    assert not (plan.work_dir / "superlink.db").exists()
    nodes = sorted(register_before_start(plan, keys, lambda _: None).values())
    _heartbeat(plan.work_dir / "superlink.db", nodes)  # the previous run's devices, still "online"
    said: list[str] = []
    with superlink_running(plan, said.append) as (_, flwr_home):
        listed = list_nodes(flwr_home=flwr_home)
    assert sorted(n["node-id"] for n in listed) == nodes and {n["status"] for n in listed} == {"offline"}
    assert "2 device session(s) left online by the previous SuperLink: marked offline" in said
    assert end_leftover_sessions(plan.work_dir / "superlink.db") == []


@pytest.mark.parametrize(("settings", "warned"), [({}, False), ({"secagg.enabled": "false"}, True)])
def test_serve_warns_when_secure_aggregation_is_turned_off(tmp_path, catalog, monkeypatch, settings, warned) -> None:
    """A deployment runs SecAgg+ by default (issue 17); turning it off is said before anything starts."""
    def superlink(plan, say):
        raise RuntimeError("stop here")

    monkeypatch.setattr(launch, "superlink_running", superlink)
    plan = ServerPlan(certs=tmp_path, settings={"data.source": str(catalog), "run.deployment_nodes": 3, **settings},
                      work_dir=tmp_path / "w")
    said: list[str] = []
    with pytest.raises(RuntimeError, match="stop here"):
        launch.serve(plan, say=said.append)
    assert any("secure aggregation is off" in line for line in said) is warned
    written = (tmp_path / "w" / "run-config.toml").read_text()
    assert ('mode = "off"' in written) is warned  # the default ('auto') is not written: the ServerApp resolves it
