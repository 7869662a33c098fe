"""Two deployed federations on 127.0.0.1, one after the other, as separate processes: `fedrec server` (SuperLink
with TLS and SuperNode authentication) and four `fedrec client` devices that keep their state directories across
both runs; record DP, user DP and SecAgg+ on.

Run "spring" (1 round): the devices start together with the server, before its SuperLink is up (they wait for it,
`--connect-timeout`, and none is refused: every key was registered before the SuperLink accepted a node); an
unregistered key is refused; once the run is over, no device holds a zombie process. Run "summer" (2 rounds): each
device's lifetime ledger continues; device 1 is SIGKILLed (its whole process tree) while it answers round 1 and
restarted with the same state directory; device 2, whose own lifetime budget covers one round, declines both
rounds. Afterwards every lifetime ledger equals an independent recomputation (the server's record of who trained
in which round of which run, and each round's DP-SGD event from the settings), and `fedrec audit verify` passes on
every report. Every process is stopped by PID at the end, also when the test fails. Only loopback addresses are
used.
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest
from typer.testing import CliRunner

from fedrec.cli.main import app as cli
from fedrec.server.flwr_control import list_nodes
from fedrec.shared.config import RunConfig
from fedrec.shared.data.synthetic import make_synthetic
from fedrec.shared.edge.node_keys import make_node_key
from fedrec.shared.edge.processes import free_port, stop_tree
from fedrec.shared.edge.tls import make_certificates
from fedrec.shared.model.build import build_model
from fedrec.shared.model.recommender import trainable_state
from fedrec.shared.privacy.ledger import PrivacyLedger
from fedrec.shared.run_dir import clients_dir, read_adapter, read_catalog, read_config, write_catalog
from fedrec.shared.train.dp_sgd import plan_round

FEDREC = Path(sys.executable).parent / "fedrec"
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (Path(sys.executable).parent / "flower-superlink").is_file(),
                                 reason="flower-superlink not installed beside this interpreter")]
DEVICES, KILLED, SPENT = 4, 1, 2  # device 1 is killed mid-round 1 of the second run; device 2 affords one round
RUNS = {"spring": 1, "summer": 2}  # run name -> rounds
SETTINGS = ["record_dp.enabled=true", "secagg.enabled=true", "user_dp.enabled=true", "run.client_sampling=poisson",
            "user_dp.clip_norm=0.5", "user_dp.delta=1e-3", "train.bias_learning_rate=0.5", "record_dp.accountant=rdp",
            "record_dp.expected_batch=8", "model.history_tokens=32", "eval.every=2",  # evaluate after the last round
            # adapter rounds only (test_hybrid_e2e: the release phase): with releases, device 1's first ClientApp
            # after the catalog would be a round-0 release, not round 1, and the ledgers would hold release entries
            "hybrid.releases="]


def settings() -> RunConfig:
    return RunConfig.from_mapping(dict(s.split("=", 1) for s in SETTINGS))


def opacus_epsilon(rounds: int) -> float:
    """The device's epsilon after `rounds` rounds with these settings, from Opacus' own RDP accountant."""
    from opacus.accountants import RDPAccountant

    plan, acc = plan_round(settings()), RDPAccountant()
    acc.history = [(plan.noise_multiplier, plan.sample_rate, plan.steps)] * rounds
    return acc.get_epsilon(settings().record_dp.delta)


class Processes:
    """Every process the test starts (each in its own session), stopped by PID with all descendants."""

    def __init__(self, root: Path) -> None:
        self.root, self.procs = root, {}
        self.env = {**os.environ, "OMP_NUM_THREADS": "1", "FLWR_TELEMETRY_ENABLED": "0",
                    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1", "HF_HUB_OFFLINE": "1"}
        self.env.pop("FLWR_HOME", None)

    def start(self, name: str, *args: str) -> subprocess.Popen:
        log = open(self.root / f"{name}.log", "ab")  # noqa: SIM115 - the child holds it; closed at exit
        proc = subprocess.Popen([str(FEDREC), *args], cwd=self.root, env=self.env, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text(encoding="utf-8", errors="replace")

    def kill(self, name: str) -> None:
        """SIGKILL a process group and every descendant (also those in other sessions), as a crash would."""
        proc = self.procs[name]
        tree = [proc.pid, *(p.pid for p in psutil.Process(proc.pid).children(recursive=True))]
        for pid in tree:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait(timeout=10)

    def stop(self, names: list[str]) -> None:
        """Stop these processes (SIGTERM, as a device owner would) and everything they started."""
        stop_tree([self.procs[n].pid for n in names], grace=20)
        for n in names:
            self.procs[n].wait(timeout=10)

    def stop_all(self) -> None:
        stop_tree([p.pid for p in self.procs.values()], grace=10)
        for p in self.procs.values():
            try:
                os.killpg(p.pid, signal.SIGKILL)  # anything left in the sessions we created
            except (ProcessLookupError, PermissionError):
                pass
            p.wait(timeout=10)


def wait_until(what: str, check: Callable[[], object], procs: Processes, *, server: str, timeout: float,
               every: float = 1.0) -> object:
    """Poll `check` until it is true; fail with the server's log if the server exits or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        proc = procs.procs[server]
        if proc.poll() is not None:
            raise AssertionError(f"fedrec server exited ({proc.returncode}) while waiting for {what}:\n"
                                 f"{procs.log(server)[-4000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}:\n{procs.log(server)[-3000:]}")
        time.sleep(every)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir: Path) -> dict:
    root = tmp_path_factory.mktemp("edge")
    ds = make_synthetic(num_users=DEVICES, num_items=40, seed=2)
    write_catalog(root / "public", ds.catalog)
    for i, u in enumerate(ds.users):
        with open(root / f"history-{i}.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["user", "item", "weight"])
            w.writerows([u.user_id, ds.catalog.item_ids[int(it)], float(x)] for it, x in zip(u.items, u.weights,
                                                                                                strict=True))
    make_certificates(root / "certs")  # localhost, 127.0.0.1, ::1
    for i in range(DEVICES + 1):  # the last key is never registered
        make_node_key(root / "keys", f"device-{i}")
    return {"root": root, "model": tiny_llama_dir, "port": free_port()}


def _server(procs: Processes, world: dict, run: str) -> subprocess.Popen:
    return procs.start(f"server-{run}", "server", "--data", "public/catalog.json", "--nodes", str(DEVICES), "--port",
                       str(world["port"]), "--rounds", str(RUNS[run]), "--clients-per-round", str(DEVICES),
                       "--model", str(world["model"]), "--run-name", run, "--wait-timeout", "300",
                       *(a for i in range(DEVICES) for a in ("--register", f"keys/device-{i}.pub")),
                       *(a for s in SETTINGS for a in ("-s", s)))


def _client(procs: Processes, world: dict, i: int, name: str, *extra: str) -> subprocess.Popen:
    budget = ("--epsilon-max", str((opacus_epsilon(1) + opacus_epsilon(2)) / 2)) if i == SPENT else ()
    return procs.start(name, "client", "--superlink", f"127.0.0.1:{world['port']}", "--data",
                       f"history-{min(i, DEVICES - 1)}.csv", "--state-dir", f"device-{i}", "--root-cert",
                       "certs/ca.crt", "--key", f"keys/device-{i}", "--connect-timeout", "300", *budget, *extra)


def _new_clientapp(procs: Processes, name: str, after: float) -> bool:
    """True once the device runs a ClientApp process started after `after` (it is answering a message)."""
    try:
        kids = psutil.Process(procs.procs[name].pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return False
    for k in kids:
        try:
            if "flwr-clientapp" in " ".join(k.cmdline()) and k.create_time() > after:
                return True
        except psutil.Error:  # exited meanwhile
            continue
    return False


def _zombies(procs: Processes, name: str) -> list[str]:
    """The zombie processes in a device's process tree (what a finished task leaves if nobody waits for it)."""
    out = []
    for p in psutil.Process(procs.procs[name].pid).children(recursive=True):
        try:
            if p.status() == psutil.STATUS_ZOMBIE:
                out.append(f"{p.pid} {p.name()}")
        except psutil.Error:
            continue
    return out


def _node_ids(log: str) -> dict[int, int]:
    found = {int(i): int(n) for i, n in re.findall(r"keys/device-(\d+)\.pub as node (\d+)", log)}
    assert sorted(found) == list(range(DEVICES)), log
    return found


def _wait_for_server(procs: Processes, run: str, seen: dict) -> None:
    server = procs.procs[f"server-{run}"]
    server.wait(timeout=900)
    seen[f"{run}_code"] = server.returncode


@pytest.fixture(scope="module")
def federations(world: dict) -> Iterator[dict]:
    """Run both federations; yields their run directories and what was observed on the way."""
    root, procs = world["root"], Processes(world["root"])
    t0 = time.perf_counter()
    seen: dict = {}
    try:
        # -- spring: the devices start with the server; none may be refused
        _server(procs, world, "spring")
        spring = [f"spring-device-{i}" for i in range(DEVICES)]
        for i, name in enumerate(spring):
            _client(procs, world, i, name)
        wait_until("the keys to be registered", lambda: "SuperLink ready" in procs.log("server-spring"), procs,
                   server="server-spring", timeout=300)
        stranger = _client(procs, world, DEVICES, "stranger", "--activation-wait", "0")
        seen["stranger_code"] = stranger.wait(timeout=300)
        seen["node_ids"] = _node_ids(procs.log("server-spring"))
        _wait_for_server(procs, "spring", seen)
        time.sleep(5)  # the devices' last ClientApp processes have exited by now
        seen["zombies"] = {name: _zombies(procs, name) for name in spring}
        procs.stop(spring)

        # -- summer: the same state directories; device 1 crashes mid-round 1 and comes back
        _server(procs, world, "summer")
        for i in range(DEVICES):
            _client(procs, world, i, f"summer-device-{i}")
        catalog = root / f"device-{KILLED}" / "catalog.json"
        before = catalog.stat().st_mtime
        wait_until("device 1 to store the summer catalog", lambda: catalog.stat().st_mtime > before, procs,
                   server="server-summer", timeout=600)
        stored = catalog.stat().st_mtime
        wait_until("device 1 to answer round 1", lambda: _new_clientapp(procs, f"summer-device-{KILLED}", stored),
                   procs, server="server-summer", timeout=120, every=0.2)
        procs.kill(f"summer-device-{KILLED}")
        seen["killed_at"] = time.perf_counter() - t0
        # The SuperLink refuses the key until the dead session expires (2 heartbeats); and the ServerApp must see
        # the node offline (it polls every 3 s) before the device comes back, or it would wait for the lost reply.
        flwr_home, node = root / "fedrec-server" / "flwr-home", seen["node_ids"][KILLED]
        wait_until("the SuperLink to mark device 1 offline",
                   lambda: any(n["node-id"] == node and n["status"] == "offline"
                               for n in list_nodes(flwr_home=flwr_home)),
                   procs, server="server-summer", timeout=120, every=3)
        time.sleep(6)
        _client(procs, world, KILLED, "summer-device-1-restarted")
        _wait_for_server(procs, "summer", seen)
        seen["seconds"] = time.perf_counter() - t0
        seen["logs"] = {name: procs.log(name) for name in procs.procs}
    finally:
        procs.stop_all()
    assert not [p.pid for p in procs.procs.values() if psutil.pid_exists(p.pid) and
                psutil.Process(p.pid).status() != psutil.STATUS_ZOMBIE]
    print(f"\ntwo loopback federations: {seen['seconds']:.0f} s wall (device killed at {seen['killed_at']:.0f} s)")
    yield {"runs": {run: root / "fedrec-server" / "runs" / run for run in RUNS}, **seen}


def _rounds(run: Path) -> list[dict]:
    return json.loads((run / "rounds.json").read_text())


def test_both_runs_complete_and_the_restarted_device_rejoins(federations: dict) -> None:
    """Spring: every device trains. Summer: round 1 without the killed device, round 2 with it again; the spent
    device declines both rounds (a dropout the server counts, not a failure)."""
    logs = federations["logs"]
    assert federations["spring_code"] == 0, logs["server-spring"][-5000:]
    assert federations["summer_code"] == 0, logs["server-summer"][-5000:]
    spring, summer = (_rounds(federations["runs"][r]) for r in RUNS)
    assert [(r["status"], r["updates"], r["declined"]) for r in spring] == [("ok", DEVICES, 0)], spring
    assert [r["status"] for r in summer] == ["ok", "ok"] and [r["declined"] for r in summer] == [1, 1], summer
    assert summer[0]["updates"] == DEVICES - 2 and summer[1]["updates"] == DEVICES - 1, summer
    assert summer[-1]["eval_users"] == DEVICES
    run = federations["runs"]["summer"]
    cfg, catalog = read_config(run), read_catalog(run)
    start = {k: v.numpy() for k, v in trainable_state(build_model(cfg, catalog, cached=False)).items()}
    final = read_adapter(run / "adapter.safetensors")
    assert final.keys() == start.keys() and any(not np.allclose(final[k], start[k]) for k in final)


def test_keys_are_registered_before_any_device_connects(federations: dict) -> None:
    """The devices started with the server and none was refused; the unregistered key was."""
    for i in range(DEVICES):
        assert "refused this device's key" not in federations["logs"][f"spring-device-{i}"]
    assert federations["stranger_code"] != 0
    assert "refused this device's key" in federations["logs"]["stranger"]


def test_no_device_holds_a_zombie_after_the_run(federations: dict) -> None:
    assert federations["zombies"] == {f"spring-device-{i}": [] for i in range(DEVICES)}


def test_lifetime_ledgers_equal_an_independent_recomputation(world: dict, federations: dict) -> None:
    """For each device: the (run, round)s the server saw it train in (its keys went out), each charged once with
    the round's DP-SGD event from the settings; the killed device may also hold summer round 1 if it was killed
    after committing (charged, its keys never sent). Its lifetime epsilon is Opacus' own for those rounds."""
    event = plan_round(settings()).event()
    for i in range(DEVICES):
        node = federations["node_ids"][i]
        trained = [(run, r["round"]) for run, path in federations["runs"].items()
                   for r in json.loads((clients_dir(path, settings()) / "clients.json").read_text())
                   if r["node"] == node and r["phase"] == "train" and r.get("status") == "keys sent"]
        ledger = PrivacyLedger.load(world["root"] / f"device-{i}" / "record-ledger.json")
        keys = ledger.round_keys()
        if i == KILLED and ("summer", 1) in keys:
            trained = sorted([*trained, ("summer", 1)], key=lambda k: (list(RUNS).index(k[0]), k[1]))
        assert keys == trained, (i, keys, trained)
        assert [e.event for e in ledger] == [event] * len(trained) and [e.release for e in ledger] == [0] * len(keys)
        expected = {SPENT: [("spring", 1)]}.get(i, [("spring", 1), ("summer", 1), ("summer", 2)])
        assert [k for k in trained if k != ("summer", 1) or i != KILLED] == \
            [k for k in expected if k != ("summer", 1) or i != KILLED]
        report = json.loads((world["root"] / f"device-{i}" / "privacy-report.json").read_text())
        assert report["record_level"]["accounting"]["epsilon"] == pytest.approx(opacus_epsilon(len(trained)),
                                                                                rel=1e-6)


def test_reports_are_written_and_verify(world: dict, federations: dict) -> None:
    """Both runs' reports and every device's lifetime report pass `fedrec audit verify`; a device report lists the
    runs it trained in."""
    runner = CliRunner()
    reports = [(run / "privacy-report.json", run / "server-ed25519.pub") for run in federations["runs"].values()]
    for i in range(DEVICES):
        d = world["root"] / f"device-{i}"
        reports.append((d / "privacy-report.json", d / "device-ed25519.pem.pub"))
        runs = [r["run_id"] for r in json.loads((d / "privacy-report.json").read_text())["record_level"]["runs"]]
        assert runs == (["spring"] if i == SPENT else list(RUNS))
        assert (d / "adapter.safetensors").is_file() and read_config(d).run.deployment_nodes == DEVICES
    for report, key in reports:
        result = runner.invoke(cli, ["audit", "verify", str(report), "--public-key", str(key)], terminal_width=200)
        assert result.exit_code == 0, (report, result.output)
