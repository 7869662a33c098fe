"""The devices of a deployed run: finding their public keys, registering them, waiting until they are online.

With SuperNode authentication the SuperLink admits only registered keys, so `fedrec server` registers every listed
`.pub` *before* its SuperLink accepts any node (`register_before_start`): a device that connects early is never
refused for a key that was about to be registered. It does so on a SuperLink of its own that only this machine
can reach (plain HTTP on 127.0.0.1, no node authentication: Flower needs TLS for that, and the server certificate
need not name a loopback address), sharing the real SuperLink's database, then stops it and starts the real one.
`fedrec register` adds keys to the running SuperLink later. Keys are registered through Flower's Control API
client in this process (one `flwr supernode register` process per key cost ~2 s each); a key registered before
is not an error, since the SuperLink's database keeps them across restarts. The run is submitted only once N
devices are online, because the ServerApp samples from the nodes it sees and accounts DP for `deployment-nodes`
of them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from fedrec.server.flwr_control import control_client, list_nodes
from fedrec.server.launch_plan import LaunchError, Say, ServerPlan
from fedrec.server.superlink import CONNECTION, SuperLink, write_connection
from fedrec.shared.edge.processes import free_port

#: The connection to the loopback SuperLink that registers keys before the real one starts (its own FLWR_HOME).
SETUP_CONNECTION = "fedrec-setup"


def public_keys(paths: list[Path]) -> list[Path]:
    """`.pub` files named directly or found (non-recursively) in the given folders, in a stable order."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = sorted(p.glob("*.pub"))
            if not found:
                raise LaunchError(f"{p}: no *.pub node key in this folder")
            out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            raise LaunchError(f"{p}: no such public key file or folder")
    return list(dict.fromkeys(out))


def register_keys(keys: list[Path], *, flwr_home: Path, connection: str = CONNECTION,
                  say: Say = print) -> dict[Path, int | None]:
    """Register device public keys with a running SuperLink: {key: node id, or None if it was registered before}."""
    import click
    import httpx
    from flwr.cli.supernode.register import try_load_public_key
    from flwr.proto.control_pb2 import RegisterNodeRequest

    out: dict[Path, int | None] = {}
    with control_client(flwr_home, connection) as client:
        for key in keys:
            try:
                public = try_load_public_key(key)
            except click.ClickException as e:
                raise LaunchError(f"{key}: not a node public key: {e.message}") from None
            try:
                out[key] = int(client.RegisterNode(RegisterNodeRequest(public_key=public)).node_id)
            except httpx.HTTPStatusError as e:
                if e.response.status_code != 412:  # 412: "Public key already in use" (registered before)
                    raise LaunchError(f"{key}: registration failed: {e}") from None
                out[key] = None
            say(f"registered {key} as node {out[key]}" if out[key] is not None else f"{key}: already registered")
    return out


def register_before_start(plan: ServerPlan, keys: list[Path], say: Say = print) -> dict[Path, int | None]:
    """Register `keys` in the SuperLink's database before the real SuperLink starts (the module docstring says how)."""
    home = plan.work_dir / "setup-flwr-home"
    port = free_port()
    write_connection(home, f"127.0.0.1:{port}", None, name=SETUP_CONNECTION)
    link = SuperLink(plan, home, setup_port=port)
    try:
        link.start()
        return register_keys(keys, flwr_home=home, connection=SETUP_CONNECTION, say=say)
    finally:
        link.stop()


def wait_for_online(expected: int, *, flwr_home: Path, timeout: float, say: Say,
                    alive: Callable[[], bool], poll: float = 2.0) -> list[int]:
    """Node ids once `expected` registered SuperNodes are online; LaunchError after `timeout` s (0 = never)."""
    deadline = time.monotonic() + timeout if timeout > 0 else None
    seen = -1
    while True:
        if not alive():
            raise LaunchError("the SuperLink exited while waiting for devices")
        online = [int(n["node-id"]) for n in list_nodes(flwr_home=flwr_home) if n["status"] == "online"]
        if len(online) != seen:
            seen = len(online)
            say(f"devices online: {seen}/{expected}")
        if len(online) >= expected:
            return online
        if deadline is not None and time.monotonic() > deadline:
            raise LaunchError(f"only {len(online)} of {expected} devices came online within {timeout:.0f} s")
        time.sleep(poll)

