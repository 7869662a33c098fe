"""The SuperLink process `fedrec server` starts, and the connection entry through which `flwr` commands reach it.

`flower-superlink` runs with TLS, SuperNode authentication (only registered device keys may connect), a persistent
`superlink.db` in the work directory (registered keys survive a restart) and runtime dependency installation off
(the devices run the installed fedrec, nothing is fetched). It is stopped by PID, always: `superlink_running` is
the only way `serve` holds one, so errors, Ctrl-C and SIGTERM cannot leave it behind.

Sessions a previous SuperLink left behind (issue 16). The database keeps each node's status and `online_until`
(last heartbeat + 2 x 30 s), and flwr 1.41 does not reset them when a SuperLink starts. A SuperLink stops at the end
of every run while its devices are still connected, so the next SuperLink on the same database would start with
those devices "online" for up to a minute though nothing is connected: `fedrec server` would count them, submit the
run and send the catalog query to nodes that never answer, while the devices themselves, reconnecting, are refused
("[code: 2004] Failed to activate SuperNode": the key's session still counts as online). So before the real
SuperLink starts, `end_leftover_sessions` marks every node the database still shows online as offline, through
Flower's own LinkState (`deactivate_node`, as a SuperNode's clean exit would). No node can hold a session with a
SuperLink that is not running; a device whose SuperNode outlived the restart turns online again with its next
heartbeat.

The connection `[superlink.fedrec]` (address + `root-certificates`) is written into `$FLWR_HOME/config.toml`
(`FLWR_HOME` from the environment, else `<work-dir>/flwr-home`), keeping every other entry there.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import tomli_w

from fedrec.server.launch_plan import LaunchError, Say, ServerPlan
from fedrec.shared.edge.processes import ManagedProcess, reaping_superexec, tool, tool_env, wait_for_port
from fedrec.shared.edge.tls import certificate_names, check_server_files, load_certificate

#: Name of the SuperLink connection fedrec writes into `$FLWR_HOME/config.toml`.
CONNECTION = "fedrec"


def connect_address(host: str, port: int, cert: Path) -> str:
    """Where fedrec's own CLI calls reach the SuperLink: a loopback name if the certificate covers one (the
    SuperLink listens on it whenever it binds 0.0.0.0 or 127.0.0.1), else the certificate's first name."""
    names = certificate_names(load_certificate(cert))
    if host in names:
        name = host
    elif host in ("0.0.0.0", "127.0.0.1", "::") and ("127.0.0.1" in names or "localhost" in names):
        name = "127.0.0.1" if "127.0.0.1" in names else "localhost"
    elif names:
        name = names[0]
    else:
        raise LaunchError(f"{cert}: the server certificate names no host (no subject alternative names)")
    return f"[{name}]:{port}" if ":" in name else f"{name}:{port}"


def write_connection(flwr_home: Path, address: str, root_cert: Path | None, name: str = CONNECTION) -> Path:
    """Add (or replace) `[superlink.<name>]` in `$FLWR_HOME/config.toml`, keeping every other entry; without a
    `root_cert`, an insecure (plain HTTP) connection: only the loopback SuperLink that registers keys uses one."""
    flwr_home.mkdir(parents=True, exist_ok=True)
    path = flwr_home / "config.toml"
    doc: dict[str, Any] = {}
    if path.is_file():
        try:
            doc = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as e:
            raise LaunchError(f"{path}: not valid TOML ({e}); fix or remove it") from None
    superlink = doc.setdefault("superlink", {})
    superlink[name] = ({"address": address, "root-certificates": str(root_cert.resolve())} if root_cert is not None
                       else {"address": address, "insecure": True})
    superlink.setdefault("default", name)
    path.write_text(tomli_w.dumps(doc), encoding="utf-8")
    return path


def resolve_flwr_home(plan_home: Path | None, work_dir: Path, environ: Mapping[str, str]) -> Path:
    """The FLWR_HOME holding the connection: the one given, else $FLWR_HOME, else `<work-dir>/flwr-home`."""
    if plan_home is not None:
        return plan_home.resolve()
    if environ.get("FLWR_HOME"):
        return Path(environ["FLWR_HOME"]).expanduser().resolve()
    return (work_dir / "flwr-home").resolve()


class SuperLink:
    """`flower-superlink` with TLS and SuperNode authentication, started in `work_dir`, stopped by PID.

    With `setup_port`, the same database behind a SuperLink that only the server itself can reach: plain HTTP on
    127.0.0.1:`setup_port`, no node authentication (Flower requires TLS for it), used for nothing but registering
    the device keys before the real SuperLink accepts its first node (`fedrec.server.nodes.register_before_start`).
    """

    def __init__(self, plan: ServerPlan, flwr_home: Path, *, setup_port: int = 0) -> None:
        self.plan, self.flwr_home, self.setup_port = plan, flwr_home, setup_port
        self.ca, self.cert, self.key = check_server_files(plan.certs)
        self.process: ManagedProcess | None = None

    @property
    def database(self) -> Path:
        """The SuperLink's persistent database (registered keys, node sessions, runs), shared by every start."""
        return (self.plan.work_dir / "superlink.db").resolve()

    def argv(self) -> list[str]:
        p = self.plan
        common = ["--database", str(self.database), "--disable-runtime-dependency-installation"]
        if self.setup_port:
            return [tool("flower-superlink"), "--insecure", "--host", "127.0.0.1", "--port", str(self.setup_port),
                    *common]
        return [tool("flower-superlink"), "--host", p.host, "--port", str(p.port),
                "--ssl-ca-certfile", str(self.ca.resolve()), "--ssl-certfile", str(self.cert.resolve()),
                "--ssl-keyfile", str(self.key.resolve()), "--enable-supernode-auth", *common]

    def start(self) -> None:
        log = self.plan.work_dir / "superlink.log"
        env = tool_env(self.flwr_home, reap=reaping_superexec(self.plan.work_dir / "bin"))  # no zombie ServerApps
        self.process = ManagedProcess("superlink", self.argv(), env=env, log_path=log, cwd=self.plan.work_dir)
        probe = "127.0.0.1" if self.plan.host in ("0.0.0.0", "127.0.0.1") or self.setup_port else self.plan.host
        probe = "::1" if self.plan.host == "::" and not self.setup_port else probe
        try:
            wait_for_port(probe, self.setup_port or self.plan.port, timeout=self.plan.startup_timeout,
                          alive=self.process.alive)
        except (RuntimeError, TimeoutError) as e:
            raise LaunchError(f"the SuperLink did not start: {e}; see {log}:\n{_tail(log)}") from None

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


def end_leftover_sessions(database: Path) -> list[int]:
    """Mark offline every node that `database` still shows online; returns their node ids.

    Only while no SuperLink uses the database (the module docstring says why). Through Flower's own LinkState, so
    the schema (and its migrations) stay Flower's business.
    """
    if not database.is_file():
        return []
    from flwr.supercore.constant import NodeStatus
    from flwr.superlink.config_loader import get_objectstore_linkstate_factories
    from flwr.superlink.federation.noop_federation_manager import NoOpFederationManager

    _, factory = get_objectstore_linkstate_factories(str(database), NoOpFederationManager())
    state = factory.state()
    try:
        online = state.get_node_info(statuses=[NodeStatus.ONLINE])
        return [n.node_id for n in online if state.deactivate_node(n.node_id)]
    finally:
        engine = getattr(state, "_engine", None)  # flwr 1.41 keeps no close(); release the file's connections
        if engine is not None:
            engine.dispose()


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@contextmanager
def superlink_running(plan: ServerPlan, say: Say) -> Iterator[tuple[SuperLink, Path]]:
    """A started, reachable SuperLink (and the FLWR_HOME holding its connection); stopped on exit, always."""
    work = plan.work_dir
    work.mkdir(parents=True, exist_ok=True)
    flwr_home = resolve_flwr_home(plan.flwr_home, work, os.environ)
    link = SuperLink(plan, flwr_home)
    address = connect_address(plan.host, plan.port, link.cert)
    write_connection(flwr_home, address, link.ca)
    try:
        if ended := end_leftover_sessions(link.database):  # before any device can connect to it
            say(f"{len(ended)} device session(s) left online by the previous SuperLink: marked offline")
        link.start()
        say(f"SuperLink ready on {plan.host}:{plan.port} (PID {link.process.pid if link.process else '?'}; "
            f"connection {CONNECTION!r} = {address} in {flwr_home / 'config.toml'}; log {work / 'superlink.log'})")
        yield link, flwr_home
    finally:
        link.stop()
        say("SuperLink stopped")

