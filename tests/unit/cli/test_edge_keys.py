"""Deployment plumbing without a federation: certificates that a TLS client accepts, node keys that flwr 1.41's own
loaders accept, the generated Flower app and connection files as flwr parses them, node configs, process trees."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import stat
import subprocess
import sys
import textwrap
import threading
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from typer.testing import CliRunner

from fedrec.cli.main import app as cli
from fedrec.client.launch import ClientError, ClientPlan, check, node_config, prepare, wait_for_superlink
from fedrec.server.app_files import COMPONENTS, run_settings, write_app, write_run_config
from fedrec.server.nodes import public_keys
from fedrec.server.superlink import connect_address, write_connection
from fedrec.shared.config import ConfigError, RunConfig
from fedrec.shared.edge.node_keys import load_node_private_key, make_node_key, node_fingerprint
from fedrec.shared.edge.processes import stop_tree
from fedrec.shared.edge.tls import (
    CA_CERT,
    SERVER_CERT,
    SERVER_KEY,
    KeyMaterialError,
    certificate_names,
    check_server_files,
    load_certificate,
    make_certificates,
)

runner = CliRunner()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("certs")
    make_certificates(out, ["localhost", "127.0.0.1", "::1", "server.example"])
    return out


def test_certificates_name_the_server_and_keep_keys_private(certs: Path) -> None:
    cert = load_certificate(certs / SERVER_CERT)
    assert sorted(certificate_names(cert)) == sorted(["localhost", "server.example", "127.0.0.1", "::1"])
    assert _mode(certs / "ca.key") == 0o600 and _mode(certs / SERVER_KEY) == 0o600
    assert check_server_files(certs) == (certs / CA_CERT, certs / SERVER_CERT, certs / SERVER_KEY)
    with pytest.raises(KeyMaterialError, match="refusing to overwrite"):
        make_certificates(certs)
    with pytest.raises(KeyMaterialError, match="DNS name or an IP address"):
        make_certificates(certs / "bad", ["http://x"])


def test_check_server_files_refuses_a_key_of_another_certificate(certs: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    make_certificates(other)
    for name in (CA_CERT, SERVER_CERT):
        (tmp_path / name).write_bytes((certs / name).read_bytes())
    (tmp_path / SERVER_KEY).write_bytes((other / SERVER_KEY).read_bytes())
    with pytest.raises(KeyMaterialError, match="does not belong"):
        check_server_files(tmp_path)
    (tmp_path / CA_CERT).write_bytes((other / CA_CERT).read_bytes())
    with pytest.raises(KeyMaterialError, match="not signed by the CA"):
        check_server_files(tmp_path)


@pytest.mark.parametrize("name", ["127.0.0.1", "localhost"])
def test_a_tls_client_trusting_only_the_ca_accepts_the_server(certs: Path, name: str) -> None:
    """A real handshake on loopback: hostname checked against the SANs, chain checked against ca.crt only."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(certs / SERVER_CERT, certs / SERVER_KEY)
    client_ctx = ssl.create_default_context(cafile=str(certs / CA_CERT))
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def serve() -> None:
            conn, _ = listener.accept()
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                tls.sendall(b"ok")

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with client_ctx.wrap_socket(raw, server_hostname=name) as tls:
                assert tls.recv(2) == b"ok"
        thread.join(timeout=10)


@contextmanager
def _tls_server_once(certs: Path) -> Iterator[int]:
    """A TLS server on loopback with `certs`' server certificate that answers one handshake; yields its port."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(certs / SERVER_CERT, certs / SERVER_KEY)
    with socket.create_server(("127.0.0.1", 0)) as listener:

        def serve() -> None:
            conn, _ = listener.accept()
            try:
                server_ctx.wrap_socket(conn, server_side=True).close()
            except (ssl.SSLError, OSError):
                conn.close()

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        yield listener.getsockname()[1]
        thread.join(timeout=10)


def test_a_tls_client_refuses_a_name_the_certificate_lacks(certs: Path) -> None:
    client_ctx = ssl.create_default_context(cafile=str(certs / CA_CERT))
    with _tls_server_once(certs) as port, socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with pytest.raises(ssl.SSLCertVerificationError):
            client_ctx.wrap_socket(raw, server_hostname="elsewhere.example")


def test_node_keys_are_what_flwr_loads(tmp_path: Path) -> None:
    """flwr's `supernode register` loader takes the .pub; the SuperNode's loader (load_ssh_private_key) the private
    key; both give the same fingerprint, in OpenSSH's format."""
    from flwr.cli.supernode.register import try_load_public_key
    from flwr.supercore.primitives.asymmetric import public_key_to_bytes

    key = make_node_key(tmp_path, "device-1")
    assert _mode(key.private) == 0o600
    assert key.private.read_bytes().startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")
    assert key.public.read_text().startswith("ecdsa-sha2-nistp384 ")
    private = serialization.load_ssh_private_key(key.private.read_bytes(), password=None)
    assert isinstance(private, ec.EllipticCurvePrivateKey) and private.curve.name == "secp384r1"
    assert try_load_public_key(key.public) == public_key_to_bytes(private.public_key())
    assert node_fingerprint(key.private) == node_fingerprint(key.public) == key.fingerprint
    assert key.fingerprint.startswith("SHA256:") and "=" not in key.fingerprint
    with pytest.raises(KeyMaterialError, match="refusing to overwrite"):
        make_node_key(tmp_path, "device-1")


def test_an_ed25519_key_is_refused_with_the_reason(tmp_path: Path) -> None:
    """Flower's SuperNode auth needs NIST EC keys; Ed25519 (its app-signing keys) must not slip through."""
    path = tmp_path / "ed"
    path.write_bytes(ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()))
    with pytest.raises(KeyMaterialError, match="NIST curve"):
        load_node_private_key(path)
    (tmp_path / "garbage").write_text("hello")
    with pytest.raises(KeyMaterialError, match="fedrec keys node"):
        load_node_private_key(tmp_path / "garbage")


def test_keys_commands(tmp_path: Path) -> None:
    result = runner.invoke(cli, ["keys", "tls", "--out", str(tmp_path / "c"), "--host", "10.1.2.3", "--host",
                                 "edge.example"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert sorted(certificate_names(load_certificate(tmp_path / "c" / SERVER_CERT))) == ["10.1.2.3", "edge.example"]
    result = runner.invoke(cli, ["keys", "node", "--name", "phone", "--out", str(tmp_path / "k")], terminal_width=200)
    assert result.exit_code == 0, result.output
    fp = node_fingerprint(tmp_path / "k" / "phone.pub")
    assert fp in result.output
    result = runner.invoke(cli, ["keys", "fingerprint", str(tmp_path / "k" / "phone"), str(tmp_path / "c" / CA_CERT)],
                           terminal_width=200)
    assert result.exit_code == 0 and fp in result.output and "SHA-256" in result.output, result.output
    again = runner.invoke(cli, ["keys", "node", "--name", "phone", "--out", str(tmp_path / "k")], terminal_width=200)
    assert again.exit_code == 2 and "refusing to overwrite" in again.output


# -- the server's generated files, as flwr reads them ---------------------------------------------------------------

def test_generated_app_is_a_valid_flower_app_with_the_run_config_defaults(tmp_path: Path) -> None:
    from flwr.common.config import validate_fields_in_config

    doc = tomllib.loads(write_app(tmp_path / "app").read_text())
    ok, errors, _ = validate_fields_in_config(doc)
    assert ok, errors
    assert doc["tool"]["flwr"]["app"]["components"] == COMPONENTS
    assert doc["tool"]["flwr"]["app"]["config"] == RunConfig().to_nested()
    root = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())
    repo = tomllib.loads((root / "pyproject.toml").read_text())
    assert repo["tool"]["flwr"]["app"]["components"] == COMPONENTS  # the same apps `flwr run .` starts
    assert sorted(p.name for p in (tmp_path / "app").iterdir()) == ["pyproject.toml"]  # nothing else in the FAB


def test_run_settings_are_a_deployed_run_with_absolute_paths(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "catalog.json").write_text("{}")
    cfg = run_settings({"data.source": "catalog.json", "run.deployment_nodes": "3", "user_dp.enabled": "true"},
                       tmp_path / "w")
    assert cfg.run.deployment_nodes == 3 and cfg.user_dp.enabled
    assert cfg.data.source == str(tmp_path / "catalog.json") and Path(cfg.run.dir).is_absolute()
    with pytest.raises(ConfigError, match="run.deployment_nodes"):
        run_settings({"data.source": "catalog.json"}, tmp_path)
    with pytest.raises(ConfigError, match="public catalog"):
        run_settings({"run.deployment_nodes": 2}, tmp_path)
    with pytest.raises(ConfigError, match="unknown setting"):
        run_settings({"data.source": "catalog.json", "run.deployment_nodes": 2, "no-such-key": 1}, tmp_path)


def test_run_config_file_round_trips_through_flwr(tmp_path: Path) -> None:
    from flwr.common.config import parse_config_args

    cfg = RunConfig.from_mapping({"data.source": "/x/catalog.json", "run.deployment_nodes": 3,
                                  "record_dp.enabled": True, "user_dp.delta": 1e-3, "run.name": 'a "b"'})
    path = write_run_config(tmp_path / "run-config.toml", cfg)
    parsed = parse_config_args([str(path)])
    assert RunConfig.from_mapping({**RunConfig().to_flat(), **parsed}) == cfg
    assert "model.name" not in parsed  # only what differs from the defaults


def test_connection_is_added_beside_existing_ones_and_flwr_reads_it(certs: Path, tmp_path: Path,
                                                                    monkeypatch) -> None:
    from flwr.cli.flower_config import read_superlink_connection

    home = tmp_path / "flwr-home"
    home.mkdir()
    (home / "config.toml").write_text('[superlink]\ndefault = "local"\n\n[superlink.local]\naddress = ":local:"\n')
    write_connection(home, connect_address("0.0.0.0", 8443, certs / SERVER_CERT), certs / CA_CERT)
    monkeypatch.setenv("FLWR_HOME", str(home))
    conn = read_superlink_connection("fedrec")
    assert conn.address == "127.0.0.1:8443" and conn.root_certificates == str((certs / CA_CERT).resolve())
    assert read_superlink_connection("local").address == ":local:"
    assert read_superlink_connection(None).name == "local"  # the user's default is kept
    assert connect_address("server.example", 9000, certs / SERVER_CERT) == "server.example:9000"


def test_public_keys_from_files_and_folders(tmp_path: Path) -> None:
    a, b = make_node_key(tmp_path / "k", "a"), make_node_key(tmp_path / "k", "b")
    assert public_keys([tmp_path / "k", a.public]) == [a.public, b.public]
    with pytest.raises(RuntimeError, match="no such public key"):
        public_keys([tmp_path / "missing.pub"])


# -- the device side -------------------------------------------------------------------------------------------------

def _plan(tmp_path: Path, certs: Path, **kw) -> ClientPlan:
    data = tmp_path / "my history.csv"
    data.write_text("user,item\nme,a\n")
    key = make_node_key(tmp_path / "keys", "dev")
    base = {"superlink": "127.0.0.1:8443", "data": data, "state_dir": tmp_path / "state", "root_cert":
            certs / CA_CERT, "key": key.private}
    return ClientPlan(**{**base, **kw})


def test_node_config_reaches_flower_unchanged(certs: Path, tmp_path: Path) -> None:
    """Paths with spaces and quotes survive: the node config is a TOML file, parsed by flwr's own parser."""
    from flwr.common.config import parse_config_args

    plan = _plan(tmp_path, certs, user='o"neil', device_id="phone 1", epsilon_max=4.0)
    path, flwr_home = prepare(plan)
    assert parse_config_args([str(path)]) == node_config(plan) == {
        "data-path": str(plan.data.resolve()), "state-dir": str(plan.state_dir.resolve()), "user": 'o"neil',
        "device-id": "phone 1", "record-epsilon-max": 4.0}
    assert _mode(plan.state_dir) == 0o700 and flwr_home.is_dir()
    plan.data.write_text('user,item\n"o""neil",a\n"o""neil",b\n')
    assert check(plan) == (node_fingerprint(plan.key), f"history {plan.data}: user 'o\"neil', 2 rows, 2 items")


@pytest.mark.parametrize(("change", "message"), [
    ({"superlink": "localhost"}, "HOST:PORT"),
    ({"superlink": "localhost:99999"}, "HOST:PORT"),
    ({"epsilon_max": -1.0}, "must be >= 0"),
    ({"connect_timeout": 0.0}, "connect-timeout"),
])
def test_a_device_plan_that_cannot_work_is_refused(certs: Path, tmp_path: Path, change: dict, message: str) -> None:
    with pytest.raises(ClientError, match=message):
        check(_plan(tmp_path, certs, **change))


@pytest.mark.parametrize(("text", "where"), [
    ("user,item,weight\nme,a,3\nme,b,lots\n", ":3: "),  # a bad weight on line 3
    ("user,colour\nme,a\n", ":1: "),  # no item column (artist would be an alias of item)
    ("user,item\nme,a\nyou,b\n", "holds 2 users"),  # several users, no --user
    (None, "no such file"),
])
def test_client_command_reads_the_whole_history_before_connecting(certs: Path, tmp_path: Path, text, where) -> None:
    """A malformed history is refused at start (exit 2) naming the file and the line; nothing connects, nothing
    is written (the SuperLink address here answers nothing, so reaching it would fail differently)."""
    plan = _plan(tmp_path, certs)
    if text is None:
        plan.data.unlink()
    else:
        plan.data.write_text(text)
    result = runner.invoke(cli, ["client", "--superlink", plan.superlink, "--data", str(plan.data), "--state-dir",
                                 str(plan.state_dir), "--root-cert", str(plan.root_cert), "--key", str(plan.key),
                                 "--connect-timeout", "1"], terminal_width=300)
    assert result.exit_code == 2, result.output
    output = result.output.replace("\n", "")  # rich wraps long lines
    assert f"{plan.data}" in output and where in output
    assert not plan.state_dir.exists()


def test_client_command_gives_up_on_an_unreachable_superlink_naming_the_address(certs: Path, tmp_path: Path) -> None:
    """Nothing listens on the port: after --connect-timeout the device stops with the address it tried (exit 1);
    the SuperNode was never started."""
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]  # free now, closed below: nothing listens there
    plan = _plan(tmp_path, certs, superlink=f"127.0.0.1:{port}")
    result = runner.invoke(cli, ["client", "--superlink", plan.superlink, "--data", str(plan.data), "--state-dir",
                                 str(plan.state_dir), "--root-cert", str(plan.root_cert), "--key", str(plan.key),
                                 "--connect-timeout", "3"], terminal_width=300)
    assert result.exit_code == 1, result.output
    assert f"could not reach the SuperLink at 127.0.0.1:{port} within 3 s" in result.output
    assert not (plan.state_dir / "supernode" / "supernode.log").exists()


def test_a_server_whose_certificate_the_ca_does_not_verify_is_refused_at_once(certs: Path, tmp_path: Path) -> None:
    """Another federation's server (a TLS server with a certificate of another CA) is an error without retrying."""
    other = tmp_path / "other-ca"
    make_certificates(other)
    with _tls_server_once(other) as port:
        plan = _plan(tmp_path, certs, superlink=f"127.0.0.1:{port}", connect_timeout=60.0)
        with pytest.raises(ClientError, match="does not verify"):
            wait_for_superlink(plan)


def test_client_command_refuses_a_bad_key_before_starting_anything(certs: Path, tmp_path: Path) -> None:
    plan = _plan(tmp_path, certs)
    plan.key.write_text("not a key")
    result = runner.invoke(cli, ["client", "--superlink", plan.superlink, "--data", str(plan.data), "--state-dir",
                                 str(plan.state_dir), "--root-cert", str(plan.root_cert), "--key", str(plan.key)],
                           terminal_width=200)
    assert result.exit_code == 1 and "not an unencrypted OpenSSH private key" in result.output
    assert not plan.state_dir.exists()


def test_stop_tree_reaches_children_in_other_sessions(tmp_path: Path) -> None:
    """Like the SuperLink's SuperExec, a grandchild in its own session is stopped with its parent, by PID."""
    script = textwrap.dedent("""
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
        print(child.pid, flush=True)
        time.sleep(60)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    child = None
    try:
        child = int(parent.stdout.readline())
        assert psutil.pid_exists(child) and os.getsid(child) != os.getsid(parent.pid)
        assert set(stop_tree([parent.pid], grace=5)) == {parent.pid, child}
        parent.wait(timeout=5)
        assert not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE
    finally:
        for proc in [parent.pid, child]:
            if proc is not None and psutil.pid_exists(proc):
                os.kill(proc, signal.SIGKILL)
        parent.wait(timeout=5)
        parent.stdout.close()
