"""The devices of a deployed run: finding their public keys, registering them, waiting until they are online.

With SuperNode authentication the SuperLink admits only registered keys, so `fedrec server` (and `fedrec register`
for devices added later) registers each `.pub` first; a key registered before is not an error, since the
SuperLink's database keeps them across restarts. The run is submitted only once N devices are online, because
the ServerApp samples from the nodes it sees and accounts DP for `deployment-nodes` of them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from fedrec.server.flwr_control import flwr_cli, list_nodes
from fedrec.server.launch_plan import LaunchError, Say
from fedrec.server.superlink import CONNECTION


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


def register_key(key: Path, *, flwr_home: Path, connection: str = CONNECTION) -> tuple[int | None, bool]:
    """Register one device public key with the SuperLink: (node id, newly registered). A key registered before
    (this SuperLink's database keeps them) is not an error: (None, False)."""
    try:
        doc = flwr_cli(["supernode", "register", str(key), connection], flwr_home=flwr_home)
    except LaunchError as e:
        text = str(e).lower()
        if "already" in text and ("use" in text or "registered" in text):
            return None, False
        raise LaunchError(f"{key}: registration failed: {e}") from None
    return int(doc["node-id"]), True


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

