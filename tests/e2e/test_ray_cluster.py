"""Attaching a simulation to a running Ray cluster: a real head on loopback, and clear refusals before anything runs.

The slow test starts `ray start --head` on loopback in its own process group (never `ray stop`, which would stop
every Ray on the machine), runs `fedrec simulate --ray-address` on it in a subprocess and stops the head by
process group, also on failure. The driver runs in a subprocess because loopback-only Ray needs
RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 before `ray` is imported (else Ray dials this machine's IP instead).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import psutil
import pytest
from typer.testing import CliRunner

from fedrec.cli.main import app
from fedrec.simulations.ray_cluster import parse_address, probe_node
from fedrec.simulations.simulate import backend_config

BIN = Path(sys.executable).parent
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1",
                "TOKENIZERS_PARALLELISM": "false", "FLWR_TELEMETRY_ENABLED": "0",
                "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_local_ray_never_attaches_and_attached_ray_takes_the_clusters_cpus():
    """Local: address 'local' (no silent attach to RAY_ADDRESS or a `ray start` cluster) with num_cpus; attached:
    the address and no num_cpus (Ray refuses num_cpus when connecting); 1 CPU per client either way."""
    local = backend_config(num_cpus=3)
    assert local["init_args"]["address"] == "local" and local["init_args"]["num_cpus"] == 3
    attached = backend_config(ray_address="10.0.0.5:6379")
    assert attached["init_args"]["address"] == "10.0.0.5:6379" and "num_cpus" not in attached["init_args"]
    assert local["client_resources"]["num_cpus"] == attached["client_resources"]["num_cpus"] == 1
    with pytest.raises(ValueError, match="num_cpus"):
        backend_config(num_cpus=2, ray_address="10.0.0.5:6379")


@pytest.mark.parametrize("bad", ["ray://10.0.0.5:10001", "10.0.0.5", "10.0.0.5:port", ":6379", "h:70000"])
def test_parse_address_refuses_what_is_not_host_port(bad):
    with pytest.raises(ValueError, match="--ray-address"):
        parse_address(bad)


def test_parse_address_accepts_host_port_and_ipv6():
    assert parse_address("head.cluster:6379") == ("head.cluster", 6379)
    assert parse_address("[::1]:6379") == ("::1", 6379)


def test_unreachable_address_fails_fast_naming_it_and_starts_nothing(tmp_path):
    """Nothing listens on the port: exit 1 within seconds, the address in the message, no run directory."""
    port = free_port()
    started = time.monotonic()
    result = CliRunner().invoke(app, ["simulate", "--ray-address", f"127.0.0.1:{port}", "--run-dir", str(tmp_path),
                                      "--data", "synthetic:users=4,items=20"], terminal_width=300)
    assert result.exit_code == 1, result.output
    assert f"127.0.0.1:{port}" in result.output and "no Ray cluster answers" in result.output
    assert time.monotonic() - started < 60  # Ray alone would retry for minutes; generous bound on a busy machine
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("args", [["--engine", "inprocess"], ["--num-cpus", "2"], []])
def test_cli_refuses_ray_address_with_a_local_only_option_or_a_bad_address(args):
    address = "127.0.0.1:6379" if args else "ray://head:10001"
    result = CliRunner().invoke(app, ["simulate", "--ray-address", address, *args], terminal_width=300)
    assert result.exit_code == 2, result.output
    assert "--ray-address" in result.output or "--num-cpus" in result.output


def test_probe_reports_relative_paths_and_an_unshared_state_root(tmp_path, monkeypatch):
    """What a node lacks: a data path that only exists relative to the driver's folder, and a device state root
    whose check file does not hold the driver's token (i.e. not the same folder: no shared file system)."""
    (tmp_path / "history.csv").write_text("user,item\nu,a\n")
    elsewhere = tmp_path / "worker-cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    token_file = tmp_path / ".fedrec-cluster-check-x"
    token_file.write_text("another-driver")
    report = probe_node({"data": "history.csv", "model": str(tmp_path)}, str(token_file), "this-driver")
    assert len(report["problems"]) == 2, report
    assert "data 'history.csv' does not exist here" in report["problems"][0]
    assert "shared file system" in report["problems"][1]
    token_file.write_text("this-driver")
    assert probe_node({"data": str(tmp_path / "history.csv")}, str(token_file), "this-driver")["problems"] == []


@contextmanager
def ray_head(temp_dir: Path, env: dict[str, str]) -> Iterator[tuple[int, list[psutil.Process]]]:
    """A Ray head on loopback (2 CPUs) in its own process group; yields (GCS port, processes seen so far).

    Stopped by process group (SIGTERM, then SIGKILL), also when the body fails; every process it ever started
    that we saw is killed too if it is still there.
    """
    port = free_port()
    cmd = [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
           "--num-cpus=2", "--include-dashboard=false", f"--temp-dir={temp_dir}", "--disable-usage-stats",
           f"--ray-client-server-port={free_port()}"]  # not the fixed default 10001: others may use Ray here
    log = open(temp_dir / "head.log", "w")  # noqa: SIM115 - closed in finally
    head = subprocess.Popen(cmd, cwd=temp_dir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    seen: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 120
        while "Ray runtime started" not in (temp_dir / "head.log").read_text():
            assert head.poll() is None, f"ray start exited {head.returncode}:\n{(temp_dir / 'head.log').read_text()}"
            assert time.monotonic() < deadline, "the Ray head did not start within 120 s"
            time.sleep(0.5)
        seen += psutil.Process(head.pid).children(recursive=True)
        yield port, seen
    finally:
        try:
            seen += psutil.Process(head.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            pass
        for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
            try:
                os.killpg(head.pid, sig)
            except ProcessLookupError:
                break
            try:
                head.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
        for proc in seen:
            if proc.is_running():  # is_running also checks the start time, so a reused pid is left alone
                proc.kill()
        psutil.wait_procs([p for p in seen if p.is_running()], timeout=10)
        log.close()


def leftovers(temp_dir: Path, seen: list[psutil.Process]) -> list[str]:
    """Processes of this test's Ray still alive: any we saw, or any naming its temp dir on the command line."""
    alive = {p.pid for p in seen if p.is_running() and p.status() != psutil.STATUS_ZOMBIE}
    for p in psutil.process_iter(["cmdline", "status"]):
        if str(temp_dir) in " ".join(p.info["cmdline"] or []) and p.info["status"] != psutil.STATUS_ZOMBIE:
            alive.add(p.pid)
    described = []
    for pid in sorted(alive):
        try:
            described.append(f"{pid}: {' '.join(psutil.Process(pid).cmdline())[:200]}")
        except psutil.NoSuchProcess:  # it ended meanwhile
            pass
    return described


@pytest.mark.slow
def test_simulation_attaches_to_a_loopback_ray_head(tiny_llama_dir, tmp_path):
    """`fedrec simulate --ray-address` on a 2-CPU loopback head: both rounds aggregate updates, the adapter
    moves, devices' ledgers are written (record DP, so the shared state-root check ran), and the run used the
    head (its session logs hold exactly two drivers: the node probe and Flower's run). No process is left."""
    from fedrec.shared.data.federation import load_federation
    from fedrec.shared.model.build import build_model
    from fedrec.shared.model.recommender import trainable_state
    from fedrec.shared.run_dir import read_adapter, read_config

    temp_dir = Path(tempfile.mkdtemp(prefix="fedrec-ray-"))  # short: Ray's socket paths must stay < 108 bytes
    env = {**os.environ, **LOOPBACK_ENV, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "COLUMNS": "250"}
    runs = tmp_path / "runs"
    try:
        with ray_head(temp_dir, env) as (port, seen):
            cmd = [str(BIN / "fedrec"), "simulate", "--ray-address", f"127.0.0.1:{port}",
                   "--data", "synthetic:users=8,items=60,seed=2", "--model", str(tiny_llama_dir), "--rounds", "2",
                   "--clients-per-round", "3", "--run-dir", str(runs), "--run-name", "on-ray",
                   "--set", "eval.every=2", "--set", "record_dp.enabled=true"]
            out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
            drivers = {p.resolve() for p in temp_dir.glob("session_*/logs/python-core-driver-*.log")}  # + _latest
        left = leftovers(temp_dir, seen)
        log = out.stdout + out.stderr
        assert out.returncode == 0, log[-4000:]
        assert f"Ray cluster 127.0.0.1:{port}: 1 node(s), 2 CPUs, 2 clients at a time" in log, log[-4000:]
        assert len(drivers) == 2, drivers
        assert not left, f"processes of this test's Ray head are still running: {left}"
    finally:
        import shutil

        shutil.rmtree(temp_dir, ignore_errors=True)
    run = runs / "on-ray"
    rounds = json.loads((run / "rounds.json").read_text())
    assert [r["round"] for r in rounds] == [1, 2]
    assert all(r["status"] == "ok" and r["updates"] == 3 for r in rounds), rounds
    cfg = read_config(run)
    initial = {k: v.numpy() for k, v in trainable_state(build_model(cfg, load_federation(cfg).catalog)).items()}
    final = read_adapter(run / "adapter.safetensors")
    assert final.keys() == initial.keys() and any(not np.array_equal(final[k], initial[k]) for k in final)
    from fedrec.shared.run_dir import private_dir

    assert list((private_dir(run) / "devices").glob("partition-*/record-ledger.json"))  # private under DP
