"""Talking to a running SuperLink: the `flwr` CLI for actions, Flower's Control API client for polling.

Actions (register a key, submit a run, read a run's status) go through `flwr ... --format json`, Flower's supported
interface, with its error message passed on in a `LaunchError`. Polling goes through the Control API client in
this process, because one `flwr` call costs about 2 s of CPU: too much every few seconds on a small server.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fedrec.server.launch_plan import LaunchError
from fedrec.server.superlink import CONNECTION
from fedrec.shared.edge.processes import tool, tool_env


def flwr_cli(args: list[str], *, flwr_home: Path, timeout: float = 120.0) -> dict[str, Any]:
    """Run `flwr ARGS --format json` and return its JSON answer; a LaunchError with Flower's message if it failed.

    Flower prints its JSON last on stdout (after any plain messages); `success: false` carries `error-message`.
    """
    argv = [tool("flwr"), *args, "--format", "json"]
    try:
        out = subprocess.run(argv, env=tool_env(flwr_home), capture_output=True, text=True, timeout=timeout,
                             stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise LaunchError(f"`flwr {' '.join(args)}` did not answer within {timeout:.0f} s") from None
    text = out.stdout.strip()
    start = text.find("{")
    try:
        doc = json.loads(text[start:]) if start >= 0 else None
    except json.JSONDecodeError:
        doc = None
    if not isinstance(doc, dict):
        raise LaunchError(f"`flwr {' '.join(args)}` exited {out.returncode} without a JSON answer: "
                          f"{(out.stderr or out.stdout).strip()[-800:]}")
    if not doc.get("success", False):
        raise LaunchError(f"`flwr {' '.join(args)}`: {str(doc.get('error-message', doc)).strip()[:800]}")
    return doc


@contextmanager
def control_client(flwr_home: Path, connection: str = CONNECTION) -> Iterator[Any]:
    """Flower's own Control API client for the `connection` in `flwr_home`, in this process.

    Used for polling (a `flwr` CLI call costs ~2 s of CPU: too much every few seconds on a small server). It uses
    flwr 1.41's CLI helpers (`flwr.cli.flower_config`, `flwr.cli.utils`), which read FLWR_HOME from the
    environment: set for the duration of the call only.
    """
    import contextlib
    import io

    from flwr.cli.flower_config import read_superlink_connection
    from flwr.cli.utils import init_http_client_from_connection

    previous = os.environ.get("FLWR_HOME")
    os.environ["FLWR_HOME"] = str(flwr_home)
    client = None
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # it prints "Using SuperLink: ..." every time
            client = init_http_client_from_connection(read_superlink_connection(connection))
        yield client
    finally:
        if client is not None:
            client.close()
        if previous is None:
            os.environ.pop("FLWR_HOME", None)
        else:
            os.environ["FLWR_HOME"] = previous


def list_nodes(*, flwr_home: Path, connection: str = CONNECTION) -> list[dict[str, Any]]:
    """The SuperLink's registered nodes: [{"node-id": int, "status": registered/online/offline/unregistered}]."""
    from flwr.proto.control_pb2 import ListNodesRequest

    with control_client(flwr_home, connection) as client:
        res = client.ListNodes(ListNodesRequest())
    return [{"node-id": int(n.node_id), "status": str(n.status)} for n in res.nodes_info]


def run_status(run_id: int, *, flwr_home: Path, connection: str = CONNECTION) -> str:
    """Flower's status of run `run_id` (e.g. "running", "finished:completed"); "unknown" if it lists no such run."""
    runs = flwr_cli(["list", connection, "--run-id", str(run_id)], flwr_home=flwr_home)["runs"]
    return str(runs[0]["status"]) if runs else "unknown"

