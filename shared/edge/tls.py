"""TLS for a deployed federation: a private CA and the SuperLink's server certificate, made with `cryptography`.

Why a private CA: devices must know that they talk to *this* server before they upload anything (their masked
updates, their node authentication), and a device only needs one small file for that, `ca.crt`
(`fedrec client --root-cert`). The server presents `server.pem`, signed by the CA, for every address devices use
to reach it (subject alternative names: DNS names and IP addresses). `ca.key` signs certificates: keep it offline
after use; the SuperLink never needs it.

Keys are ECDSA P-384 (fast to generate, accepted by Python's `ssl`, uvicorn and httpx). Every private key is
written with mode 0600 and no file is ever overwritten unless the caller asks for it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: File names inside a certificate folder (`fedrec keys tls --out DIR`, `fedrec server --certs DIR`).
CA_CERT, CA_KEY, SERVER_CERT, SERVER_KEY = "ca.crt", "ca.key", "server.pem", "server.key"
#: Names a loopback federation needs (devices and server on one machine).
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


class KeyMaterialError(ValueError):
    """A key or certificate file cannot be written or read; the message names the file."""


@dataclass(frozen=True)
class CertificateSet:
    """Where the files of one `make_certificates` call went, and what identifies them."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    names: tuple[str, ...]  # the server certificate's subject alternative names, as given
    ca_sha256: str  # SHA-256 of the CA certificate (DER), hex with colons
    server_sha256: str


def write_private(path: Path, data: bytes, *, overwrite: bool) -> None:
    """Write a secret file with mode 0600 from the start (never world-readable, not even for a moment)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise KeyMaterialError(f"{path}: already exists; refusing to overwrite a key (use --force)") from None
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)


def write_public(path: Path, data: bytes, *, overwrite: bool) -> None:
    """Write a public file (certificate, public key); refuses to replace one unless `overwrite`."""
    if path.exists() and not overwrite:
        raise KeyMaterialError(f"{path}: already exists; refusing to overwrite it (use --force)")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def sha256_colons(data: bytes) -> str:
    """SHA-256 as upper-case hex pairs joined by colons, the way `openssl x509 -fingerprint -sha256` prints it."""
    return ":".join(f"{b:02X}" for b in hashlib.sha256(data).digest())


def certificate_fingerprint(cert: x509.Certificate) -> str:
    return sha256_colons(cert.public_bytes(serialization.Encoding.DER))


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        pass
    if not name or any(c.isspace() for c in name) or "/" in name or ":" in name:
        raise KeyMaterialError(f"server name {name!r}: expected a DNS name or an IP address")
    return x509.DNSName(name)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_certificates(out: Path, names: tuple[str, ...] | list[str] = LOOPBACK_NAMES, *, days: int = 365,
                      overwrite: bool = False) -> CertificateSet:
    """Create a CA and a server certificate for `names` (DNS names and/or IP addresses) in `out`.

    The server certificate is valid for `days` days; the CA for as long. Raises `KeyMaterialError` if a file
    exists (unless `overwrite`) or a name is neither a DNS name nor an IP address.
    """
    names = tuple(dict.fromkeys(n.strip() for n in names if n.strip()))
    if not names:
        raise KeyMaterialError("the server certificate needs at least one DNS name or IP address")
    if days < 1:
        raise KeyMaterialError(f"days: must be >= 1, found {days}")
    sans = [_general_name(n) for n in names]
    paths = [out / CA_CERT, out / CA_KEY, out / SERVER_CERT, out / SERVER_KEY]
    if not overwrite:
        for p in paths:
            if p.exists():
                raise KeyMaterialError(f"{p}: already exists; refusing to overwrite it (use --force)")
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)  # tolerate small clock differences
    until = now + dt.timedelta(days=days)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedrec"),
                         x509.NameAttribute(NameOID.COMMON_NAME, "fedrec federation CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(ca_ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA384())
    )
    server_key = ec.generate_private_key(ec.SECP384R1())
    server_name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedrec"),
                             x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    server_cert = (
        x509.CertificateBuilder().subject_name(server_name).issuer_name(ca_name)
        .public_key(server_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=True, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(server_key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA384())
    )
    write_private(out / CA_KEY, _pem_key(ca_key), overwrite=overwrite)
    write_public(out / CA_CERT, ca_cert.public_bytes(serialization.Encoding.PEM), overwrite=overwrite)
    write_private(out / SERVER_KEY, _pem_key(server_key), overwrite=overwrite)
    write_public(out / SERVER_CERT, server_cert.public_bytes(serialization.Encoding.PEM), overwrite=overwrite)
    return CertificateSet(*paths, names=names, ca_sha256=certificate_fingerprint(ca_cert),
                          server_sha256=certificate_fingerprint(server_cert))


def load_certificate(path: Path) -> x509.Certificate:
    """A PEM certificate, or a `KeyMaterialError` naming the file."""
    try:
        return x509.load_pem_x509_certificate(Path(path).read_bytes())
    except OSError as e:
        raise KeyMaterialError(f"{path}: cannot read the certificate: {e.strerror or e}") from None
    except ValueError as e:
        raise KeyMaterialError(f"{path}: not a PEM certificate ({e})") from None


def certificate_names(cert: x509.Certificate) -> list[str]:
    """The DNS names and IP addresses a server certificate is valid for."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [*san.get_values_for_type(x509.DNSName), *(str(ip) for ip in san.get_values_for_type(x509.IPAddress))]


def check_server_files(certs: Path) -> tuple[Path, Path, Path]:
    """(ca.crt, server.pem, server.key) of a certificate folder, each checked readable, the certificate signed by
    the CA and still valid; a `KeyMaterialError` naming the file otherwise."""
    ca_path, cert_path, key_path = certs / CA_CERT, certs / SERVER_CERT, certs / SERVER_KEY
    for p in (ca_path, cert_path, key_path):
        if not p.is_file():
            raise KeyMaterialError(f"{p}: not found; create the certificates with `fedrec keys tls --out {certs}`")
    ca, cert = load_certificate(ca_path), load_certificate(cert_path)
    try:
        cert.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError) as e:  # InvalidSignature has no message of its own
        raise KeyMaterialError(f"{cert_path}: not signed by the CA in {ca_path} ({type(e).__name__} {e})") from None
    now = dt.datetime.now(dt.UTC)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise KeyMaterialError(f"{cert_path}: valid from {cert.not_valid_before_utc} to {cert.not_valid_after_utc}, "
                               f"not now ({now:%Y-%m-%d %H:%M} UTC)")
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as e:
        raise KeyMaterialError(f"{key_path}: not an unencrypted PEM private key ({e})") from None
    if key.public_key().public_numbers() != cert.public_key().public_numbers():
        raise KeyMaterialError(f"{key_path}: does not belong to the certificate {cert_path}")
    return ca_path, cert_path, key_path
