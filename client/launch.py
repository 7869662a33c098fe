"""`fedrec client`: one edge device's SuperNode, pointed at its own history file and state directory.

It starts `flower-supernode` with TLS (`--root-certificates`, the federation's CA) and SuperNode authentication
(`--auth-supernode-private-key`, the device's node key, registered with the server beforehand) and with a node
config carrying what the ClientApp reads (`fedrec.client.client_app`): `data-path` (this device's history, any
supported format), `state-dir` (ledger, signing key, catalog, last adapter, report), optionally `user` (if the
file holds several users), `device-id` and the device's own `record-epsilon-max`. The node config is written to
`<state-dir>/supernode/node-config.toml` (a TOML file: no shell quoting of paths).

Flower files of this device go to `<state-dir>/supernode/`: the SuperNode log and `flwr-home/` (`FLWR_HOME`: the
installed app bundles). With the default subprocess isolation the SuperNode starts a `flwr-clientapp` process for
every message (train, each SecAgg+ stage, evaluate): a fresh Python that imports torch and fedrec each time.

Fail fast. Before anything connects, `check` reads the whole history file with the reader the device will use
(a malformed line is an error naming the file and the line; a file of several users needs `--user`), and
`wait_for_superlink` makes a TLS connection to the SuperLink, verified against the federation's CA, retrying for
up to `connect_timeout` s (a wrong host or port, or a server not started yet); the SuperNode starts only once it
succeeded. A certificate the CA does not verify is an error at once.

Refusals. The SuperLink refuses to activate a key it does not know (not registered), and also, for two heartbeat
intervals (2 x 30 s in flwr 1.41) after the last heartbeat, a registered key whose previous session still counts as
online (a device that crashed and came straight back). flwr 1.41 reports both alike to the device ("[code: 2004]
Failed to activate SuperNode"; only the SuperLink's log says which), so the device retries every `retry_every` s
for up to `activation_wait` s and then gives up with a message naming both causes.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import tomli_w

from fedrec.client.node_config import NODE_DATA_PATH, NODE_DEVICE_ID, NODE_EPSILON_MAX, NODE_STATE_DIR, NODE_USER
from fedrec.shared.data.load import read_user_history
from fedrec.shared.data.types import DataFormatError
from fedrec.shared.edge.node_keys import load_node_private_key, node_fingerprint
from fedrec.shared.edge.processes import ManagedProcess, free_port, reaping_superexec, tool, tool_env
from fedrec.shared.edge.tls import load_certificate

#: What flower-supernode prints when the SuperLink refuses to activate the key (flwr 1.41: exit 305, API 2004):
#: an unregistered key, or a registered one whose previous session still counts as online.
REFUSED = ("failed to activate supernode", "could not be activated", "must be registered")


class ClientError(RuntimeError):
    """The device cannot start or was refused; the message says why and what to do."""


@dataclass
class ClientPlan:
    superlink: str  # HOST:PORT of the SuperLink
    data: Path
    state_dir: Path
    root_cert: Path
    key: Path
    user: str = ""
    device_id: str = ""
    epsilon_max: float = 0.0
    runtime_port: int = 0  # the SuperNode's local Runtime API port (0: a free one; devices sharing a host differ)
    connect_timeout: float = 60.0  # seconds to wait for the SuperLink to answer (TLS) before giving up
    activation_wait: float = 90.0
    retry_every: float = 10.0
    echo: bool = True


def node_config(plan: ClientPlan) -> dict[str, str | float]:
    """The SuperNode's node config: what the ClientApp of this device reads, and nothing else."""
    config: dict[str, str | float] = {NODE_DATA_PATH: str(plan.data.resolve()),
                                      NODE_STATE_DIR: str(plan.state_dir.resolve())}
    if plan.user:
        config[NODE_USER] = plan.user
    if plan.device_id:
        config[NODE_DEVICE_ID] = plan.device_id
    if plan.epsilon_max > 0:
        config[NODE_EPSILON_MAX] = float(plan.epsilon_max)
    return config


def superlink_address(plan: ClientPlan) -> tuple[str, int]:
    """(host, port) of `--superlink HOST:PORT` (an IPv6 host in brackets)."""
    host, sep, port = plan.superlink.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ClientError(f"--superlink {plan.superlink!r}: expected HOST:PORT, e.g. 10.0.0.5:8000")
    return host.removeprefix("[").removesuffix("]"), int(port)


def check(plan: ClientPlan) -> tuple[str, str]:
    """Refuse a plan that cannot work before anything starts: (the node key's fingerprint, what the history holds).

    The history file is read completely, as the device reads it in every round: a `DataFormatError` names the file
    and the line.
    """
    superlink_address(plan)
    if not plan.data.is_file():
        raise DataFormatError(str(plan.data), "no such file (--data: this device's listening history)")
    parsed, user = read_user_history(plan.data, user=plan.user or None)
    rows = sum(parsed.histories.row_counts(user).values())
    if not rows:
        raise DataFormatError(str(plan.data), f"no listening rows for user {user!r}")
    load_certificate(plan.root_cert)
    load_node_private_key(plan.key)
    if plan.epsilon_max < 0:
        raise ClientError(f"--epsilon-max {plan.epsilon_max}: must be >= 0 (0 = the run's budget)")
    if plan.connect_timeout <= 0:
        raise ClientError(f"--connect-timeout {plan.connect_timeout}: must be > 0 seconds")
    items = len(parsed.histories.row_counts(user))
    return node_fingerprint(plan.key), f"history {plan.data}: user {user!r}, {rows} rows, {items} items"


def wait_for_superlink(plan: ClientPlan, *, every: float = 2.0) -> None:
    """Return once a TLS connection to the SuperLink succeeds, verified against `--root-cert`; a `ClientError`
    naming the address after `connect_timeout` s of failures, or at once if the CA does not verify its certificate."""
    host, port = superlink_address(plan)
    context = ssl.create_default_context(cafile=str(plan.root_cert))
    deadline, last = time.monotonic() + plan.connect_timeout, ""
    while True:
        try:
            with socket.create_connection((host, port), timeout=min(10.0, plan.connect_timeout)) as raw, \
                    context.wrap_socket(raw, server_hostname=host):
                return
        except ssl.SSLCertVerificationError as e:
            raise ClientError(f"the server at {host}:{port} presented a certificate that {plan.root_cert} does not "
                              f"verify ({e.verify_message}); is --superlink the federation's server, and "
                              "--root-cert its ca.crt?") from None
        except OSError as e:  # refused, unreachable, timed out, not TLS
            last = str(e) or type(e).__name__
        if time.monotonic() + every > deadline:
            raise ClientError(f"could not reach the SuperLink at {host}:{port} within {plan.connect_timeout:.0f} s "
                              f"(--connect-timeout): {last}. Check the host and port (`fedrec server --port`) and "
                              "that the server is running and reachable from this device.")
        time.sleep(every)


def prepare(plan: ClientPlan) -> tuple[Path, Path]:
    """Create the state directory (0700) and write the node config; returns (node-config.toml, FLWR_HOME)."""
    plan.state_dir.mkdir(parents=True, exist_ok=True)
    plan.state_dir.chmod(0o700)  # private: ledger, signing key, unmasked round update
    flower = plan.state_dir / "supernode"
    (flower / "flwr-home").mkdir(parents=True, exist_ok=True)
    path = flower / "node-config.toml"
    path.write_text(tomli_w.dumps(node_config(plan)), encoding="utf-8")
    return path, flower / "flwr-home"


def supernode_argv(plan: ClientPlan, config_path: Path, runtime_port: int) -> list[str]:
    return [tool("flower-supernode"), "--superlink", plan.superlink,
            "--root-certificates", str(plan.root_cert.resolve()),
            "--auth-supernode-private-key", str(plan.key.resolve()),
            "--node-config", str(config_path.resolve()), "--port", str(runtime_port)]


class _Watch:
    """Remembers whether the SuperNode's output showed that the SuperLink refused its key."""

    def __init__(self) -> None:
        self.refused = threading.Event()

    def __call__(self, line: str) -> None:
        if any(s in line.lower() for s in REFUSED):
            self.refused.set()


def run_device(plan: ClientPlan, say=print) -> int:
    """Run this device's SuperNode until it exits or we are stopped; returns its exit code.

    Stops the SuperNode (and its SuperExec and ClientApp processes) by PID on any exit, Ctrl-C and SIGTERM
    included (the CLI turns SIGTERM into SystemExit).
    """
    fingerprint, history = check(plan)
    say(history)
    config_path, flwr_home = prepare(plan)
    port = plan.runtime_port or free_port()
    log = plan.state_dir / "supernode" / "supernode.log"
    say(f"device key {plan.key} ({fingerprint}) -> SuperLink {plan.superlink}; state {plan.state_dir}; log {log}")
    wait_for_superlink(plan)
    deadline = time.monotonic() + plan.activation_wait
    while True:
        watch = _Watch()
        node = ManagedProcess("supernode", supernode_argv(plan, config_path, port), env=tool_env(
            flwr_home, reap=reaping_superexec(plan.state_dir / "supernode" / "bin")), log_path=log, echo=plan.echo,
            on_line=watch)
        try:
            code = node.wait()
        finally:
            node.stop()
        if code == 0 or not watch.refused.is_set():
            return code
        if time.monotonic() + plan.retry_every > deadline:
            raise ClientError(f"the SuperLink refused this device's key {plan.key} ({fingerprint}). Either the key "
                              f"is not registered (send {plan.key.name}.pub to the server's operator, who runs "
                              f"`fedrec register {plan.key.name}.pub`), or this device's previous session still "
                              "counts as online (wait a minute after a crash). The SuperLink's log says which.")
        say(f"the SuperLink refused this device's key (not registered, or its previous session still counts as "
            f"online); retrying in {plan.retry_every:.0f} s")
        time.sleep(plan.retry_every)
