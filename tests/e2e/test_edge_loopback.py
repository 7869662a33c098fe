"""A deployed federation on 127.0.0.1, as separate processes: `fedrec server` (SuperLink with TLS and SuperNode
authentication) and three `fedrec client` devices, record DP, user DP and SecAgg+ on, 2 rounds.

One device is SIGKILLed (its whole process tree) while it answers round 1 and restarted with the same state
directory; an unregistered key is refused. Afterwards: the global adapter changed, the server and every device
wrote their reports, and `fedrec audit verify` passes on all of them. Every process is stopped by PID at the end,
also when the test fails. Only loopback addresses are used.
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
from fedrec.shared.data.synthetic import make_synthetic
from fedrec.shared.edge.node_keys import make_node_key
from fedrec.shared.edge.processes import free_port, stop_tree
from fedrec.shared.edge.tls import make_certificates
from fedrec.shared.model.build import build_model
from fedrec.shared.model.recommender import trainable_state
from fedrec.shared.privacy.ledger import PrivacyLedger
from fedrec.shared.run_dir import read_adapter, read_catalog, read_config, write_catalog

FEDREC = Path(sys.executable).parent / "fedrec"
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (Path(sys.executable).parent / "flower-superlink").is_file(),
                                 reason="flower-superlink not installed beside this interpreter")]
DEVICES, KILLED = 3, 1  # device 1 is killed mid-round 1 and restarted
SETTINGS = ["record_dp.enabled=true", "secagg.enabled=true", "user_dp.enabled=true", "run.client_sampling=poisson",
            "user_dp.clip_norm=0.5", "user_dp.delta=1e-3", "train.bias_learning_rate=0.5", "record_dp.accountant=rdp",
            "record_dp.expected_batch=8", "model.history_tokens=32", "eval.every=2"]  # evaluate once, after round 2


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

    def stop_all(self) -> None:
        stop_tree([p.pid for p in self.procs.values()], grace=10)
        for p in self.procs.values():
            try:
                os.killpg(p.pid, signal.SIGKILL)  # anything left in the sessions we created
            except (ProcessLookupError, PermissionError):
                pass
            p.wait(timeout=10)


def wait_until(what: str, check: Callable[[], object], procs: Processes, *, timeout: float,
               every: float = 1.0) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        server = procs.procs.get("server")
        if server is not None and server.poll() is not None:
            raise AssertionError(f"fedrec server exited ({server.returncode}) while waiting for {what}:\n"
                                 f"{procs.log('server')[-4000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}:\n{procs.log('server')[-3000:]}")
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


def _client(procs: Processes, world: dict, i: int, name: str, *extra: str) -> subprocess.Popen:
    return procs.start(name, "client", "--superlink", f"127.0.0.1:{world['port']}", "--data",
                       f"history-{min(i, DEVICES - 1)}.csv", "--state-dir", f"device-{i}", "--root-cert",
                       "certs/ca.crt", "--key", f"keys/device-{i}", *extra)


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


@pytest.fixture(scope="module")
def deployed(world: dict) -> Iterator[dict]:
    """Run the whole federation once; yields the server's run directory and what was observed on the way."""
    root, procs = world["root"], Processes(world["root"])
    t0 = time.perf_counter()
    seen: dict = {}
    try:
        procs.start("server", "server", "--data", "public/catalog.json", "--nodes", str(DEVICES), "--port",
                    str(world["port"]), "--rounds", "2", "--clients-per-round", str(DEVICES), "--model",
                    str(world["model"]), "--run-name", "loopback", "--wait-timeout", "300",
                    *(a for i in range(DEVICES) for a in ("--register", f"keys/device-{i}.pub")),
                    *(a for s in SETTINGS for a in ("-s", s)))
        wait_until("the devices' keys to be registered", lambda: "devices online: 0/" in procs.log("server"),
                   procs, timeout=120)
        node_ids = {int(i): int(n) for i, n in re.findall(r"keys/device-(\d+)\.pub as node (\d+)", procs.log("server"))}
        assert sorted(node_ids) == list(range(DEVICES)), procs.log("server")
        for i in range(DEVICES):
            _client(procs, world, i, f"device-{i}")
        stranger = _client(procs, world, DEVICES, "stranger", "--activation-wait", "0")
        seen["stranger_code"] = stranger.wait(timeout=120)

        # Crash device 1 while it answers its first message after the catalog (round 1's train message).
        catalog = root / f"device-{KILLED}" / "catalog.json"
        wait_until("device 1 to store the catalog", catalog.is_file, procs, timeout=300)
        stored = catalog.stat().st_mtime
        wait_until("device 1 to answer round 1", lambda: _new_clientapp(procs, f"device-{KILLED}", stored), procs,
                   timeout=120, every=0.2)
        procs.kill(f"device-{KILLED}")
        seen["killed_at"] = time.perf_counter() - t0
        # The SuperLink refuses the key until the dead session expires (2 heartbeats); and the ServerApp must see
        # the node offline (it polls every 3 s) before the device comes back, or it would wait for the lost reply.
        flwr_home = root / "fedrec-server" / "flwr-home"

        def offline() -> bool:
            return any(n["node-id"] == node_ids[KILLED] and n["status"] == "offline"
                       for n in list_nodes(flwr_home=flwr_home))

        wait_until("the SuperLink to mark device 1 offline", offline, procs, timeout=120, every=3)
        time.sleep(6)
        _client(procs, world, KILLED, "device-1-restarted")
        seen["restarted_at"] = time.perf_counter() - t0
        server = procs.procs["server"]
        server.wait(timeout=900)
        seen["server_code"] = server.returncode
        seen["seconds"] = time.perf_counter() - t0
        seen["logs"] = {name: procs.log(name) for name in procs.procs}
    finally:
        procs.stop_all()
    assert not [p.pid for p in procs.procs.values() if psutil.pid_exists(p.pid) and
                psutil.Process(p.pid).status() != psutil.STATUS_ZOMBIE]
    print(f"\nloopback federation: {seen['seconds']:.0f} s wall (device killed at {seen['killed_at']:.0f} s, "
          f"restarted at {seen['restarted_at']:.0f} s)")
    yield {"run": root / "fedrec-server" / "runs" / "loopback", **seen}


def test_the_run_completes_and_changes_the_global_adapter(deployed: dict) -> None:
    """Both rounds release an aggregate; round 2 has all three devices again, the restarted one included."""
    run, logs = deployed["run"], deployed["logs"]
    assert deployed["server_code"] == 0, logs["server"][-5000:]
    rounds = json.loads((run / "rounds.json").read_text())
    assert [r["status"] for r in rounds] == ["ok", "ok"], rounds
    assert rounds[0]["updates"] >= 2 and rounds[1]["updates"] == DEVICES, rounds
    assert rounds[-1]["eval_users"] == DEVICES
    cfg, catalog = read_config(run), read_catalog(run)
    start = {k: v.numpy() for k, v in trainable_state(build_model(cfg, catalog, cached=False)).items()}
    final = read_adapter(run / "adapter.safetensors")
    assert final.keys() == start.keys()
    assert any(not np.allclose(final[k], start[k]) for k in final)


def test_an_unregistered_key_is_refused(world: dict, deployed: dict) -> None:
    """The SuperLink refuses the fourth key (never registered): the device gives up with the reason."""
    assert deployed["stranger_code"] != 0
    assert "refused this device's key" in deployed["logs"]["stranger"]
    superlink = (world["root"] / "fedrec-server" / "superlink.log").read_text(errors="replace")
    assert "No SuperNode found with the given public key" in superlink


def test_reports_are_written_and_verify(world: dict, deployed: dict) -> None:
    """The server's run report and every device's record-level report pass `fedrec audit verify`; the killed
    device's ledger holds each round at most once and round 2, after its restart."""
    runner, run = CliRunner(), deployed["run"]
    reports = [(run / "privacy-report.json", run / "server-ed25519.pub")]
    for i in range(DEVICES):
        d = world["root"] / f"device-{i}"
        reports.append((d / "privacy-report.json", d / "device-ed25519.pem.pub"))
        ledger = PrivacyLedger.load(d / "record-ledger.json")
        assert ledger.rounds() == sorted(set(ledger.rounds())) and 2 in ledger.rounds(), (i, ledger.rounds())
        if i != KILLED:
            assert ledger.rounds() == [1, 2], (i, ledger.rounds())
        assert (d / "adapter.safetensors").is_file() and (d / "config.json").is_file()
        assert read_config(d).run.deployment_nodes == DEVICES  # offline `fedrec recommend --state-dir` reads it
    for report, key in reports:
        assert report.is_file(), report
        result = runner.invoke(cli, ["audit", "verify", str(report), "--public-key", str(key)], terminal_width=200)
        assert result.exit_code == 0, (report, result.output)
