"""SuperNode authentication keys: one ECDSA P-384 key pair per device, in the OpenSSH format flwr 1.41 expects.

With `flower-superlink --enable-supernode-auth` a SuperNode is admitted only if its public key was registered
with the SuperLink beforehand (`fedrec register`, i.e. `flwr supernode register`). Flower requires the key to be
an elliptic-curve key on a NIST curve, serialised as OpenSSH: the private key as `-----BEGIN OPENSSH PRIVATE
KEY-----` (read by `flower-supernode --auth-supernode-private-key`, loaded with `load_ssh_private_key`), the
public key as one line `ecdsa-sha2-nistp384 AAAA... comment` (read by `flwr supernode register`).

The private key never leaves the device (mode 0600); only the `.pub` file goes to the server's operator, who
can compare its fingerprint (OpenSSH style, `SHA256:...`, as `ssh-keygen -lf` prints it) over another channel.

This key only authenticates the node to the SuperLink. The device's Ed25519 report-signing key is another key
(`fedrec.client.device_state`), made on first use inside the device's state directory.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fedrec.shared.edge.tls import KeyMaterialError, write_private, write_public

#: The curves flwr 1.41 accepts for SuperNode keys (`flwr.supercore.primitives.asymmetric.uses_nist_ec_curve`).
NIST_CURVES = ("secp256r1", "secp384r1", "secp521r1")


@dataclass(frozen=True)
class NodeKey:
    """A device's SuperNode key pair on disk."""

    private: Path
    public: Path
    fingerprint: str  # OpenSSH style: "SHA256:" + unpadded base64 of the SHA-256 of the public key blob


def public_fingerprint(public_line: bytes) -> str:
    """The OpenSSH fingerprint of a public key line (`ecdsa-sha2-nistp384 AAAA... [comment]`)."""
    parts = public_line.split()
    if len(parts) < 2:
        raise ValueError("not an OpenSSH public key line")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except binascii.Error as e:
        raise ValueError(f"not an OpenSSH public key line ({e})") from None
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def _public_line(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)


def make_node_key(out: Path, name: str, *, overwrite: bool = False) -> NodeKey:
    """Create `out/name` (private, 0600) and `out/name.pub`; refuses to overwrite either unless `overwrite`."""
    if not name or "/" in name or name.startswith(".") or any(c.isspace() for c in name):
        raise KeyMaterialError(f"key name {name!r}: expected a plain file name such as 'device-1'")
    private, public = out / name, out / f"{name}.pub"
    if not overwrite:
        for p in (private, public):
            if p.exists():
                raise KeyMaterialError(f"{p}: already exists; refusing to overwrite a key (use --force)")
    key = ec.generate_private_key(ec.SECP384R1())
    line = _public_line(key.public_key()) + f" fedrec-{name}\n".encode()
    write_private(private, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                             serialization.NoEncryption()), overwrite=overwrite)
    write_public(public, line, overwrite=overwrite)
    return NodeKey(private, public, public_fingerprint(line))


def load_node_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """A SuperNode private key as flower-supernode will read it, or a `KeyMaterialError` saying what is wrong."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise KeyMaterialError(f"{path}: cannot read the node key: {e.strerror or e}") from None
    try:
        key = serialization.load_ssh_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise KeyMaterialError(f"{path}: not an unencrypted OpenSSH private key ({e}); create one with "
                               "`fedrec keys node`") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name not in NIST_CURVES:
        raise KeyMaterialError(f"{path}: Flower needs an ECDSA key on a NIST curve (P-256/384/521), found "
                               f"{getattr(getattr(key, 'curve', None), 'name', type(key).__name__)}")
    return key


def node_fingerprint(path: Path) -> str:
    """The OpenSSH fingerprint of a node key file: a `.pub` line or the private key (same fingerprint)."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise KeyMaterialError(f"{path}: cannot read: {e.strerror or e}") from None
    if data.lstrip().startswith(b"-----BEGIN"):
        return public_fingerprint(_public_line(load_node_private_key(path).public_key()))
    try:
        key = serialization.load_ssh_public_key(data.strip())
    except (ValueError, UnsupportedAlgorithm) as e:
        raise KeyMaterialError(f"{path}: not an OpenSSH public key ({e})") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name not in NIST_CURVES:
        raise KeyMaterialError(f"{path}: Flower needs an ECDSA key on a NIST curve (P-256/384/521)")
    return public_fingerprint(data)
