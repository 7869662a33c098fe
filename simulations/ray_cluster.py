"""Attach a simulation to a running Ray cluster: check the address and every node before Flower starts.

Flower's Ray backend calls `ray.init(address=...)` itself. Given an address that is not a Ray cluster, Ray retries
for minutes (an unreachable port or a non-Ray service hangs `ray.init`), and a node that cannot see the data or
the devices' state directories fails, or worse, silently keeps a partial record-level ledger. So before a run:

1. `check_address`: the GCS answers a Ray RPC (`NodeInfoGcsService/GetClusterId`) within seconds, else a
   `RayClusterError` that names the address.
2. `check_nodes`: connect once, run one probe task pinned to every node that has CPUs (the nodes that will host
   client actors), and require on each: fedrec importable, the data / item-metadata / model paths readable at
   the same path, and, with record-level DP on, the devices' state root visible (a file the driver writes there
   must be readable from every node: a simulated device's ledger is rewritten by whichever node runs it, so it
   must live on a shared file system). Then disconnect; Flower connects again for the run.

Uses `ray._private.services` (address canonicalisation) and Ray's generated GCS gRPC stubs: internal Ray APIs,
pinned by `flwr[simulation]` (ray 2.55.1).
"""

from __future__ import annotations

import logging
import os
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedrec.shared.config import RunConfig

#: seconds to wait for the GCS to answer, and for every node's probe task
GCS_TIMEOUT_S = 5.0
PROBE_TIMEOUT_S = 120.0
#: CPUs one virtual client (ClientApp actor) asks for; `simulate.backend_config` uses the same value
CPUS_PER_CLIENT = 1


class RayClusterError(ConnectionError):
    """The Ray cluster cannot be used for this run; the message says which address or node, and why."""


@dataclass(frozen=True)
class ClusterInfo:
    """What the run will get: `parallel_clients` ClientApp actors in all (1 CPU each) over `nodes` nodes."""

    address: str
    nodes: int
    cpus: float
    parallel_clients: int

    def as_event(self) -> dict[str, Any]:
        return {"address": self.address, "nodes": self.nodes, "cpus": self.cpus,
                "parallel_clients": self.parallel_clients}


def parse_address(address: str) -> tuple[str, int]:
    """`HOST:PORT` (IPv6 as `[::1]:6379`) of a Ray head's GCS; anything else is a ValueError that says why."""
    text = address.strip()
    if "://" in text:
        raise ValueError(f"--ray-address {address!r}: give the GCS address HOST:PORT that `ray start --head` prints "
                         "(default port 6379), not a URL; Ray Client (ray://) is not supported")
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--ray-address {address!r}: expected HOST:PORT, e.g. 10.0.0.5:6379")
    return host, int(port)


def ray_dial_address(address: str) -> str:
    """The address Ray will actually connect to: Ray replaces a loopback host by this machine's IP unless
    RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 was set before Ray was imported."""
    from ray._private import services

    return services.canonicalize_bootstrap_address(address) or address


def check_address(address: str, timeout: float = GCS_TIMEOUT_S) -> str:
    """Raise `RayClusterError` unless a Ray GCS answers at `address` within `timeout` s; returns the dialled address.

    Ray itself would retry for minutes; this asks the GCS for its cluster id over gRPC, so a wrong host, a closed
    port or another service on that port fails in seconds, naming the address.
    """
    parse_address(address)
    import grpc
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

    dial = ray_dial_address(address)
    shown = address if dial == address else f"{address} (Ray dials {dial})"
    channel = grpc.insecure_channel(dial)
    try:
        gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel).GetClusterId(
            gcs_service_pb2.GetClusterIdRequest(), timeout=timeout)
    except grpc.RpcError as e:
        hint = ""
        if dial != address:
            hint = (" Ray replaced the loopback host by this machine's IP; a head started with "
                    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 listens on loopback only: set that variable here too.")
        raise RayClusterError(f"no Ray cluster answers at {shown}: {e.code().name}: {e.details()}. Start one with "
                              f"`ray start --head --port=PORT` and pass the address it prints.{hint}") from None
    finally:
        channel.close()
    return dial


def required_paths(cfg: RunConfig) -> dict[str, str]:
    """The settings that name files every node's ClientApp reads, with their values (as given: a relative path
    resolves against each worker's working directory, which is where `ray start` ran, not where this runs)."""
    paths = {}
    if not (cfg.data.source == "synthetic" or cfg.data.source.startswith("synthetic:")):
        paths["data"] = cfg.data.source
    if cfg.data.item_metadata:
        paths["item-metadata"] = cfg.data.item_metadata
    if cfg.model.name not in ("", "minilm"):
        paths["model"] = cfg.model.name
    return paths


def device_state_root(cfg: RunConfig) -> Path:
    """The folder under which simulated devices keep their state (see `server.federation._messages`)."""
    return Path(cfg.run.device_state_dir or cfg.run.dir).resolve()


def probe_node(paths: dict[str, str], token_file: str, token: str) -> dict[str, Any]:
    """Runs on one node (a Ray task): what this node lacks, as a list of problems (empty = ready)."""
    import importlib.util
    import platform

    problems = []
    if importlib.util.find_spec("fedrec.client.client_app") is None:
        problems.append("fedrec is not importable (install it in the same Python environment on every node)")
    for key, value in paths.items():
        if not Path(value).exists():
            problems.append(f"{key} {value!r} does not exist here (working directory {os.getcwd()})")
    if token_file:
        try:
            seen = Path(token_file).read_text()
        except OSError as e:
            seen = f"unreadable ({type(e).__name__})"
        if seen != token:
            problems.append(f"the device state root {str(Path(token_file).parent)!r} is not the driver's folder "
                            f"(a check file written there reads {seen!r} here): with record-dp on it must be on a "
                            "shared file system at the same path on every node (or set device-state-dir to one)")
    return {"host": platform.node(), "problems": problems}


def check_nodes(address: str, cfg: RunConfig, timeout: float = PROBE_TIMEOUT_S) -> ClusterInfo:
    """Probe every node with CPUs once (see the module docstring); raise `RayClusterError` listing what is missing.

    Connects with the same PYTHONPATH runtime env that Flower's Ray backend sets, and disconnects afterwards.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    token_file, token = "", ""
    if cfg.record_dp.enabled:
        root = device_state_root(cfg)
        root.mkdir(parents=True, exist_ok=True)
        token = secrets.token_hex(16)
        token_file = str(root / f".fedrec-cluster-check-{token[:8]}")
        Path(token_file).write_text(token)
    pythonpath = os.pathsep.join([*sys.path, *filter(None, [os.environ.get("PYTHONPATH")])])
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
                 runtime_env={"env_vars": {"PYTHONPATH": pythonpath}})
        try:
            nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0]
            capacity = sum(int(n["Resources"]["CPU"] // CPUS_PER_CLIENT) for n in nodes)
            if capacity == 0:
                raise RayClusterError(f"the Ray cluster at {address} has no node with {CPUS_PER_CLIENT} free CPU for "
                                      "a client (start nodes with --num-cpus >= 1)")
            task = ray.remote(num_cpus=0, max_retries=0)(probe_node)
            refs = {n["NodeManagerAddress"] + " " + n["NodeID"][:8]: task.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(
                    required_paths(cfg), token_file, token) for n in nodes}
            ready, pending = ray.wait(list(refs.values()), num_returns=len(refs), timeout=timeout)
            failures = []
            for name, ref in refs.items():
                if ref not in ready:
                    failures.append(f"node {name}: no answer within {timeout:.0f} s")
                    continue
                try:
                    report = ray.get(ref)
                except Exception as e:  # noqa: BLE001 - a node that cannot even run the probe is reported, not raised
                    failures.append(f"node {name}: the probe task failed (is fedrec installed in the same Python "
                                    f"environment there?): {type(e).__name__}: {str(e)[:300]}")
                    continue
                failures += [f"node {name} ({report['host']}): {p}" for p in report["problems"]]
            if failures:
                raise RayClusterError(f"the Ray cluster at {address} is not ready for this run:\n  "
                                      + "\n  ".join(failures))
            return ClusterInfo(address, len(nodes), float(sum(n["Resources"]["CPU"] for n in nodes)), capacity)
        finally:
            ray.shutdown()
    finally:
        if token_file:
            Path(token_file).unlink(missing_ok=True)
