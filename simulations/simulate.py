"""Run a whole federation on one machine with Flower's simulation engine (Ray backend).

One virtual client (SuperNode) per user; Ray gives each ClientApp actor 1 CPU, so a 2-core machine trains two
clients at a time, and a Ray cluster attached with `ray_address` as many as it has CPUs (docs/scale-out.md).
Used by `fedrec simulate`; `flwr run .` reaches the same ServerApp/ClientApp. `synthetic:users=auto` (the
default data) is `AUTO_USERS` users here.

Ctrl-C: the first SIGINT (or a SIGTERM) asks the run to stop (`fedrec.shared.progress.request_stop`): the server
loop raises
`RunInterrupted` at its next poll (a tenth of a second while it waits for clients), the ServerApp ends, Flower
stops its simulation runtime and shuts Ray down (its actors and processes), and `simulate` raises
`RunInterrupted`. The checkpoint of the last completed round is untouched, so `--resume` continues the run.
A second Ctrl-C interrupts at once (Python's KeyboardInterrupt).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from fedrec.server.federation import Event
from fedrec.shared.config import RunConfig
from fedrec.shared.data.load import AUTO_USERS, with_users
from fedrec.shared.progress import RunInterrupted, clear_stop, request_stop, stop_requested
from fedrec.simulations.ray_cluster import CPUS_PER_CLIENT, check_address, check_nodes

QUIET_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_DEDUP_LOGS": "0",
    "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
}


def backend_config(num_cpus: int | None = None, ray_address: str | None = None) -> dict:
    """Flower's Ray backend settings: every virtual client (ClientApp actor) asks 1 CPU.

    Local: a new Ray instance with `num_cpus` CPUs (default: all). `address="local"` because with no address
    `ray.init` attaches to any cluster named by RAY_ADDRESS or started by `ray start` on this machine (and then
    fails on num_cpus). Attached (`ray_address`): the cluster's CPUs decide how many clients train at once.
    """
    if ray_address and num_cpus:
        raise ValueError("num_cpus applies to a local Ray instance; an attached cluster's own CPUs decide")
    init_args: dict = {"include_dashboard": False, "log_to_driver": False}
    if ray_address:
        init_args["address"] = ray_address
    else:
        init_args.update(address="local", num_cpus=num_cpus or os.cpu_count() or 1)
    return {"client_resources": {"num_cpus": CPUS_PER_CLIENT, "num_gpus": 0.0}, "init_args": init_args}


def simulate(cfg: RunConfig | None, on_event: Event | None = None, num_cpus: int | None = None,
             engine: str = "ray", resume: Path | str | None = None, ray_address: str | None = None) -> Path:
    """Run the federation described by `cfg`; returns its run directory.

    `engine`: "ray" (Flower's simulation engine, one actor per CPU) or "inprocess" (the same ServerApp loop and
    ClientApp in this process, see `fedrec.simulations.inprocess`: for one-GPU benchmarks and sweeps).
    `resume`: continue that interrupted run from its checkpoint, in its own directory (`fedrec.server.checkpoint`);
    `cfg` may then be None (the run's config.json is used) and must otherwise equal it. Either engine can resume
    a run started with either: clients are identified by partition, not by node id.
    `ray_address`: attach to that running Ray cluster (HOST:PORT of its GCS, docs/scale-out.md) instead of
    starting a local one; its address and every node are checked first (`ray_cluster`), failing with a
    `RayClusterError` that names the address, and a "cluster" event reports the nodes and parallel clients.
    """
    if resume is not None:
        from fedrec.server.checkpoint import resumable_config

        resume = Path(resume)
        cfg = resumable_config(resume, given=cfg)  # refuses a finished run, a bad checkpoint, other settings
    if cfg is None:
        raise ValueError("simulate: cfg is required unless resume names a run directory")
    cfg = cfg.updated({"data.source": with_users(cfg.data.source, AUTO_USERS)}) if resume is None else cfg
    for k, v in QUIET_ENV.items():
        os.environ.setdefault(k, v)
    if engine == "inprocess":
        if ray_address:
            raise ValueError("ray_address needs the Ray engine; the in-process engine runs every client here")
        return simulate_inprocess(cfg, on_event, resume=resume)
    if engine != "ray":
        raise ValueError(f"engine must be 'ray' or 'inprocess', found {engine!r}")
    backend = backend_config(num_cpus, ray_address)
    if ray_address:  # fail in seconds, naming the address, rather than let ray.init retry for minutes
        check_address(ray_address)
        cluster = check_nodes(ray_address, cfg)
        if on_event:
            on_event("cluster", cluster.as_event())
    from flwr.simulation import run_simulation

    from fedrec.client.client_app import app as client_app
    from fedrec.server.server_app import make_server_app
    from fedrec.shared.data.federation import load_federation
    from fedrec.simulations import message_pump

    population = len(load_federation(cfg).splits) + cfg.audit.canary_clients  # users + audit canary clients
    result: dict[str, Path] = {}

    def capture(kind: str, payload: dict) -> None:
        if kind in ("start", "done"):
            result["run_dir"] = Path(payload["run_dir"])
        if on_event:
            on_event(kind, payload)

    logging.getLogger("flwr").setLevel(logging.ERROR)  # keeps errors, drops the run_simulation deprecation
    message_pump.install()  # Flower's pump scans every node every 0.1 s: costly at thousands of clients
    with stop_on_interrupt():
        try:
            run_simulation(
                server_app=make_server_app(cfg, capture, resume=resume),
                client_app=client_app,
                num_supernodes=population,
                backend_config=backend,
            )
        except RunInterrupted:
            pass
    if stop_requested():  # the server thread ended on the request (Flower may have swallowed the exception)
        raise RunInterrupted(f"interrupted; the checkpoint of the last completed round is in "
                             f"{result.get('run_dir', 'the run directory')} (fedrec simulate --resume RUN_DIR)")
    if "run_dir" not in result or not (result["run_dir"] / "rounds.json").is_file():
        raise RuntimeError("the simulation ended without completing a round; see the log above")
    return result["run_dir"]


def simulate_inprocess(cfg: RunConfig, on_event: Event | None = None, resume: Path | None = None) -> Path:
    """The federation in this process: `run_federation` over an `InProcessGrid` of one node per user."""
    from fedrec.client.client_app import app as client_app
    from fedrec.server.federation import run_federation
    from fedrec.server.progress_grid import ProgressGrid
    from fedrec.shared.data.federation import load_federation
    from fedrec.simulations.inprocess import InProcessGrid

    grid = InProcessGrid(client_app, len(load_federation(cfg).splits) + cfg.audit.canary_clients)
    emit = on_event or (lambda kind, payload: None)
    return run_federation(ProgressGrid(grid, emit), cfg, on_event, resume=resume)


@contextlib.contextmanager
def stop_on_interrupt() -> Iterator[None]:
    """While inside: the first SIGINT or SIGTERM requests a clean stop (see the module docstring), a second SIGINT
    is Python's KeyboardInterrupt. Only in the main thread (where signal handlers live); elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    clear_stop()
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def first(signum: int, frame: object) -> None:
        request_stop()
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C: stop now
        print("\nstopping after the current step (Ctrl-C again to stop at once) ...", file=sys.stderr, flush=True)

    for sig in previous:
        signal.signal(sig, first)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
