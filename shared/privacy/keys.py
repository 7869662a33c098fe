"""Ed25519 keys for signing epsilon reports: the server key signs run reports, a device key its device report.

Ed25519 (RFC 8032) because signatures are deterministic (no RNG at signing time to get wrong), keys and
signatures are small (32 and 64 bytes), and `cryptography` implements it without options to misconfigure.

Keys are stored as PEM: the private key as unencrypted PKCS#8 (or encrypted with `password`) in a file of mode
0600 from its first byte, the public key as SubjectPublicKeyInfo. A key is named by its fingerprint,
``SHA256:<hex of sha256(raw 32-byte public key)>``, which reports carry next to the signature.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fedrec.shared.io import atomic_write_bytes
from fedrec.shared.privacy.errors import KeyFileError

__all__ = [
    "Ed25519PrivateKey",
    "Ed25519PublicKey",
    "fingerprint",
    "generate_private_key",
    "load_or_create_private_key",
    "load_private_key",
    "load_public_key",
    "public_key_from_raw",
    "public_key_raw",
    "save_private_key",
    "save_public_key",
]


def generate_private_key() -> Ed25519PrivateKey:
    """A fresh key from the OS CSPRNG."""
    return Ed25519PrivateKey.generate()


def public_key_raw(key: Ed25519PublicKey | Ed25519PrivateKey) -> bytes:
    """The 32 raw public-key bytes (of the public half, if given a private key)."""
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_key_from_raw(raw: bytes) -> Ed25519PublicKey:
    if len(raw) != 32:
        raise KeyFileError(f"Ed25519 public key: expected 32 bytes, found {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


def fingerprint(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    """``SHA256:<64 hex digits>`` of the raw public key: how reports and people name a key."""
    return "SHA256:" + hashlib.sha256(public_key_raw(key)).hexdigest()


def save_private_key(key: Ed25519PrivateKey, path: str | os.PathLike[str], *, password: bytes | None = None) -> Path:
    """Write the private key as PKCS#8 PEM, file mode 0600, crash-safely."""
    enc: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)
    return atomic_write_bytes(path, pem, mode=0o600)


def save_public_key(key: Ed25519PublicKey | Ed25519PrivateKey, path: str | os.PathLike[str]) -> Path:
    """Write the public key (of the public half, if given a private key) as SubjectPublicKeyInfo PEM."""
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    pem = pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return atomic_write_bytes(path, pem, mode=0o644)


def load_private_key(path: str | os.PathLike[str], *, password: bytes | None = None) -> Ed25519PrivateKey:
    """Read a PEM private key and insist it is Ed25519."""
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=password)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise KeyFileError(f"{path}: not a readable PEM private key: {e}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: expected an Ed25519 private key, found {type(key).__name__}")
    return key


def load_public_key(path: str | os.PathLike[str]) -> Ed25519PublicKey:
    """Read a public key: SubjectPublicKeyInfo PEM, or (for convenience) a private-key PEM's public half."""
    data = Path(path).read_bytes()
    if b"PRIVATE KEY" in data:
        return load_private_key(path).public_key()
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as e:
        raise KeyFileError(f"{path}: not a readable PEM public key: {e}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{path}: expected an Ed25519 public key, found {type(key).__name__}")
    return key


def load_or_create_private_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """The key at `path`, or a new one saved there (with ``<path>.pub`` next to it) on first use."""
    path = Path(path)
    if path.exists():
        return load_private_key(path)
    key = generate_private_key()
    save_private_key(key, path)
    save_public_key(key, path.with_name(path.name + ".pub"))
    return key


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str, *, what: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError) as e:
        raise KeyFileError(f"{what}: not valid base64: {e}") from None
