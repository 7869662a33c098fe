"""Run a whole federation on one machine with Flower's simulation engine (Ray backend).

One virtual client (SuperNode) per user; Ray gives each ClientApp actor 1 CPU, so a 2-core machine trains two
clients at a time. Used by `fedrec simulate`; `flwr run .` reaches the same ServerApp/ClientApp.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from fedrec.server.federation import Event
from fedrec.shared.config import RunConfig

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
    cpus = num_cpus or os.cpu_count() or 1
    init_args: dict = {"include_dashboard": False, "log_to_driver": False}
    if ray_address:
        init_args["address"] = ray_address
    else:
        init_args["num_cpus"] = cpus
    return {"client_resources": {"num_cpus": 1, "num_gpus": 0.0}, "init_args": init_args}


def simulate(cfg: RunConfig, on_event: Event | None = None, num_cpus: int | None = None,
             engine: str = "ray") -> Path:
    """Run the federation described by `cfg`; returns its run directory.

    `engine`: "ray" (Flower's simulation engine, one actor per CPU) or "inprocess" (the same ServerApp loop and
    ClientApp in this process, see `fedrec.simulations.inprocess`: for one-GPU benchmarks and sweeps).
    """
    for k, v in QUIET_ENV.items():
        os.environ.setdefault(k, v)
    if engine == "inprocess":
        return simulate_inprocess(cfg, on_event)
    if engine != "ray":
        raise ValueError(f"engine must be 'ray' or 'inprocess', found {engine!r}")
    from flwr.simulation import run_simulation

    from fedrec.client.client_app import app as client_app
    from fedrec.server.server_app import make_server_app
    from fedrec.shared.federation_data import load_federation

    population = len(load_federation(cfg).splits) + cfg.audit_canary_clients  # users + audit canary clients
    result: dict[str, Path] = {}

    def capture(kind: str, payload: dict) -> None:
        if kind in ("start", "done"):
            result["run_dir"] = Path(payload["run_dir"])
        if on_event:
            on_event(kind, payload)

    logging.getLogger("flwr").setLevel(logging.ERROR)  # keeps errors, drops the run_simulation deprecation
    run_simulation(
        server_app=make_server_app(cfg, capture),
        client_app=client_app,
        num_supernodes=population,
        backend_config=backend_config(num_cpus),
    )
    if "run_dir" not in result or not (result["run_dir"] / "rounds.json").is_file():
        raise RuntimeError("the simulation ended without completing a round; see the log above")
    return result["run_dir"]


def simulate_inprocess(cfg: RunConfig, on_event: Event | None = None) -> Path:
    """The federation in this process: `run_federation` over an `InProcessGrid` of one node per user."""
    from fedrec.client.client_app import app as client_app
    from fedrec.server.federation import run_federation
    from fedrec.shared.federation_data import load_federation
    from fedrec.simulations.inprocess import InProcessGrid

    grid = InProcessGrid(client_app, len(load_federation(cfg).splits) + cfg.audit_canary_clients)
    return run_federation(grid, cfg, on_event)
