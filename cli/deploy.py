"""`fedrec keys | register | server | client`: a deployed federation over Flower's deployment engine.

Argument parsing and messages only; the work is in `fedrec.shared.edge.tls`, `fedrec.shared.edge.node_keys`,
`fedrec.server.launch` and `fedrec.client.launch` (imported inside each command so `fedrec --help` stays fast).
See docs/deployment.md for the whole procedure across machines.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

keys_app = typer.Typer(add_completion=False, no_args_is_help=True,
                       help="Create TLS certificates (server) and SuperNode keys (devices); show fingerprints.")
console = Console(emoji=False)  # ":cd:" in a hex fingerprint must not become an emoji


def _fail(message: str, code: int = 2) -> typer.Exit:
    console.print(f"[red]error:[/red] {escape(message)}", highlight=False)
    return typer.Exit(code)


def _exit_on_sigterm() -> None:
    """SIGTERM ends the command like Ctrl-C does: `finally` blocks run and every started process is stopped."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))


def _say(text: str) -> None:
    console.print(text, highlight=False, soft_wrap=True, markup=False)


@keys_app.command("tls")
def keys_tls(
    out: Annotated[Path, typer.Option(help="folder for ca.crt, ca.key, server.pem, server.key")] = Path("certs"),
    host: Annotated[list[str], typer.Option("--host", help="a DNS name or IP address devices use to reach the "
                                            "server (repeatable); default: localhost, 127.0.0.1, ::1")] = [],  # noqa: B006
    days: Annotated[int, typer.Option(help="validity of the certificates in days")] = 365,
    force: Annotated[bool, typer.Option(help="overwrite existing files")] = False,
) -> None:
    """A private CA and the SuperLink's TLS certificate. Give devices ca.crt only; keep ca.key offline."""
    from fedrec.shared.edge.tls import LOOPBACK_NAMES, KeyMaterialError, make_certificates

    try:
        made = make_certificates(out, host or list(LOOPBACK_NAMES), days=days, overwrite=force)
    except KeyMaterialError as e:
        raise _fail(str(e)) from None
    _say(f"CA certificate     {made.ca_cert}  (to every device: --root-cert)\n"
         f"  SHA-256          {made.ca_sha256}\n"
         f"CA key             {made.ca_key}  (0600; only needed to sign new server certificates)\n"
         f"server certificate {made.server_cert}  for {', '.join(made.names)}, {days} days\n"
         f"  SHA-256          {made.server_sha256}\n"
         f"server key         {made.server_key}  (0600; stays on the server)")


@keys_app.command("node")
def keys_node(
    name: Annotated[str, typer.Option(help="key file name, e.g. the device's name")] = "supernode",
    out: Annotated[Path, typer.Option(help="folder for NAME (private, 0600) and NAME.pub")] = Path("keys"),
    force: Annotated[bool, typer.Option(help="overwrite existing files")] = False,
) -> None:
    """A device's SuperNode key pair (ECDSA P-384, OpenSSH format). Run it on the device; send only NAME.pub."""
    from fedrec.shared.edge.node_keys import make_node_key
    from fedrec.shared.edge.tls import KeyMaterialError

    try:
        key = make_node_key(out, name, overwrite=force)
    except KeyMaterialError as e:
        raise _fail(str(e)) from None
    _say(f"private key  {key.private}  (0600; stays on this device: fedrec client --key {key.private})\n"
         f"public key   {key.public}  (to the server's operator: fedrec register {key.public.name})\n"
         f"fingerprint  {key.fingerprint}")


@keys_app.command("fingerprint")
def keys_fingerprint(
    files: Annotated[list[Path], typer.Argument(help="node keys (.pub or private) or PEM certificates")],
) -> None:
    """Fingerprints to compare over another channel: `SHA256:...` for node keys, SHA-256 for certificates."""
    from fedrec.shared.edge.node_keys import node_fingerprint
    from fedrec.shared.edge.tls import KeyMaterialError, certificate_fingerprint, certificate_names, load_certificate

    failed = False
    for f in files:
        try:
            head = f.read_bytes()[:64] if f.is_file() else b""
            if b"CERTIFICATE" in head:
                cert = load_certificate(f)
                _say(f"{f}  SHA-256 {certificate_fingerprint(cert)}  ({cert.subject.rfc4514_string()}; names: "
                     f"{', '.join(certificate_names(cert)) or 'none'}; until {cert.not_valid_after_utc:%Y-%m-%d})")
            else:
                _say(f"{f}  {node_fingerprint(f)}")
        except KeyMaterialError as e:
            console.print(f"[red]error:[/red] {escape(str(e))}", highlight=False)
            failed = True
    if failed:
        raise typer.Exit(2)


def register(
    keys: Annotated[list[Path], typer.Argument(help="device public keys (.pub) or folders of them")],
    work_dir: Annotated[Path, typer.Option(help="the `fedrec server` work directory (its FLWR_HOME holds the "
                                           "connection)")] = Path("fedrec-server"),
    flwr_home: Annotated[Path | None, typer.Option(help="FLWR_HOME with the `fedrec` connection (default: "
                                                   "$FLWR_HOME, else WORK_DIR/flwr-home)")] = None,
) -> None:
    """Register device public keys with the running SuperLink (Flower's Control API)."""
    import os

    from fedrec.server.launch_plan import LaunchError
    from fedrec.server.nodes import public_keys, register_keys
    from fedrec.server.superlink import resolve_flwr_home

    home = resolve_flwr_home(flwr_home, work_dir, os.environ)
    if not (home / "config.toml").is_file():
        raise _fail(f"{home / 'config.toml'}: not found; start `fedrec server --work-dir {work_dir}` first (it "
                    "writes the connection), or pass --flwr-home")
    try:
        register_keys(public_keys(keys), flwr_home=home, say=_say)
    except LaunchError as e:
        raise _fail(str(e), 1) from None


def server(
    data: Annotated[str, typer.Option(help="the public catalog: a catalog.json, a folder holding one, or a data "
                                      "set whose catalog is used")],
    nodes: Annotated[int, typer.Option(help="number of devices (deployment-nodes): the run waits for them and "
                                       "uses this population for DP accounting")],
    certs: Annotated[Path, typer.Option(help="folder from `fedrec keys tls`")] = Path("certs"),
    register_keys: Annotated[list[Path], typer.Option("--register", help="device public key (.pub) or folder of "
                                                      "them to register first (repeatable)")] = [],  # noqa: B006
    rounds: Annotated[int, typer.Option(help="federated rounds", show_default="20 (run.rounds)")] = 0,
    clients_per_round: Annotated[int, typer.Option(help="devices sampled per round",
                                                   show_default="10 (run.clients_per_round)")] = 0,
    model: Annotated[str, typer.Option(help="'minilm' or a local HF model directory (the same on every "
                                       "device)", show_default="minilm")] = "",
    set_: Annotated[list[str], typer.Option("--set", "-s", help="any other setting, KEY=VALUE (repeatable); see "
                                            "`fedrec settings`")] = [],  # noqa: B006
    run_name: Annotated[str, typer.Option(help="run directory name (default: deploy-<timestamp>)")] = "",
    host: Annotated[str, typer.Option(help="address the SuperLink binds (0.0.0.0: every interface)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="the SuperLink's one port (Fleet, Control and Runtime APIs)")] = 8000,
    work_dir: Annotated[Path, typer.Option(help="app, SuperLink database and log, runs/")] = Path("fedrec-server"),
    flwr_home: Annotated[Path | None, typer.Option(help="FLWR_HOME for the connection (default: $FLWR_HOME, "
                                                   "else WORK_DIR/flwr-home)")] = None,
    wait_timeout: Annotated[float, typer.Option(help="seconds to wait for the devices (0 = no limit)")] = 0.0,
) -> None:
    """Start a SuperLink (TLS, SuperNode authentication), wait for the devices, run, stop what was started."""
    from fedrec.server.launch import serve
    from fedrec.server.launch_plan import LaunchError, ServerPlan
    from fedrec.shared.config import ConfigError
    from fedrec.shared.data.types import DataFormatError
    from fedrec.shared.edge.tls import KeyMaterialError

    _exit_on_sigterm()
    plan = ServerPlan(certs=certs, settings=_settings(data, nodes, rounds, clients_per_round, model, run_name, set_),
                      work_dir=work_dir, host=host, port=port, flwr_home=flwr_home, register=register_keys,
                      wait_timeout=wait_timeout)
    try:
        outcome = serve(plan, say=_say)
    except (ConfigError, KeyMaterialError, DataFormatError, FileNotFoundError, ValueError) as e:
        raise _fail(str(e)) from None
    except LaunchError as e:
        raise _fail(str(e), 1) from None
    except KeyboardInterrupt:
        raise _fail("interrupted; everything started was stopped", 130) from None
    ok = outcome.status == "finished:completed" and outcome.rounds_ok > 0
    _say(f"run {outcome.run_id}: {outcome.status}, {outcome.rounds_ok}/{outcome.rounds} rounds ok -> "
         f"{outcome.run_dir}")
    if (outcome.run_dir / "privacy-report.json").is_file():
        _say(f"verify: fedrec audit verify {outcome.run_dir / 'privacy-report.json'} --public-key "
             f"{outcome.run_dir / 'server-ed25519.pub'}")
    if not ok:
        raise typer.Exit(1)


def client(
    superlink: Annotated[str, typer.Option(help="the SuperLink's HOST:PORT")],
    data: Annotated[Path, typer.Option(help="this device's listening history (any supported format)")],
    state_dir: Annotated[Path, typer.Option(help="private folder: ledger, keys, catalog, last adapter, reports")],
    root_cert: Annotated[Path, typer.Option(help="the federation's CA certificate (ca.crt)")],
    key: Annotated[Path, typer.Option(help="this device's SuperNode private key (`fedrec keys node`)")],
    user: Annotated[str, typer.Option(help="the user to read, if the history file holds several")] = "",
    device_id: Annotated[str, typer.Option(help="name in reports and ledger (default: the fingerprint of the "
                                           "device's signing key)")] = "",
    epsilon_max: Annotated[float, typer.Option(help="this device's own record-level budget; a run can only "
                                               "lower it (0 = the run's)")] = 0.0,
    runtime_port: Annotated[int, typer.Option(help="local port of the SuperNode's Runtime API (0 = a free "
                                              "one)")] = 0,
    activation_wait: Annotated[float, typer.Option(help="seconds to keep retrying when the SuperLink refuses the key "
                                                   "(after a crash it counts the old session online ~60 s)")] = 90.0,
    connect_timeout: Annotated[float, typer.Option(help="seconds to wait at start for the SuperLink to answer (TLS) "
                                                   "before giving up")] = 60.0,
) -> None:
    """Run this device's SuperNode until stopped (Ctrl-C): it trains on DATA only when the server asks.

    Before connecting it reads DATA completely (exit 2 naming the file and line if it is malformed) and waits up to
    --connect-timeout s for the SuperLink (exit 1 naming the address it tried)."""
    from fedrec.client.launch import ClientError, ClientPlan, run_device
    from fedrec.shared.data.types import DataFormatError
    from fedrec.shared.edge.tls import KeyMaterialError

    _exit_on_sigterm()
    plan = ClientPlan(superlink=superlink, data=data, state_dir=state_dir, root_cert=root_cert, key=key, user=user,
                      device_id=device_id, epsilon_max=epsilon_max, runtime_port=runtime_port,
                      activation_wait=activation_wait, connect_timeout=connect_timeout)
    try:
        code = run_device(plan, say=_say)
    except DataFormatError as e:
        raise _fail(str(e), 2) from None
    except (ClientError, KeyMaterialError, FileNotFoundError) as e:
        raise _fail(str(e), 1) from None
    except KeyboardInterrupt:
        _say("stopped")
        return
    if code:
        raise _fail(f"flower-supernode exited with code {code}; see {state_dir / 'supernode' / 'supernode.log'}",
                    1)


def install(app: typer.Typer) -> None:
    """Add the deployment commands to the `fedrec` app."""
    app.add_typer(keys_app, name="keys")
    app.command()(register)
    app.command()(server)
    app.command()(client)


def _settings(data: str, nodes: int, rounds: int, clients_per_round: int, model: str, run_name: str,
              pairs: list[str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for p in pairs:
        if "=" not in p:
            raise typer.BadParameter(f"--set expects KEY=VALUE, found {p!r}")
        k, v = p.split("=", 1)
        values[k.strip()] = v.strip()
    for key, value, unset in (("data.source", data, ""), ("run.deployment_nodes", nodes, 0), ("run.rounds", rounds, 0),
                              ("run.clients_per_round", clients_per_round, 0), ("model.name", model, ""),
                              ("run.name", run_name, "")):
        if value != unset:
            values[key] = value
    return values
