"""The cryptographic primitives of the protocol, each a thin layer over a reviewed library.

* Key agreement: X25519 (RFC 7748, `cryptography`). Each client makes two key pairs per round: `c` to encrypt
  the shares it sends to a neighbour, `s` to agree a pairwise mask seed with each neighbour. Raw agreed secrets
  always go through HKDF (`prg.derive_key`) with a label naming the pair, never into a cipher directly.
* Share transport: AES-256-GCM (`cryptography`), random 96-bit nonce, the session id and both indices as
  associated data, so a server cannot replay a ciphertext into another round or swap it to another pair.
  (Flower's helper uses Fernet, AES-128-CBC + HMAC, with no associated data.)
* Secret sharing: Shamir over GF(2^128) (`shamir`), share-compatible with pycryptodome's `Shamir` (the
  primitive Flower's `create_shares`/`combine_shares` wrap) but some 15x faster to combine: pycryptodome's
  pure-Python field arithmetic made rebuilding 100 survivors' seeds cost the server seconds a round.
  A 32-byte secret is shared as two 16-byte chunks with the same x-coordinate; a share is
  `index (2 bytes, big-endian) || chunk-1 share || chunk-2 share` (34 bytes). Coefficients come from
  `os.urandom` (the OS CSPRNG).
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from fedrec.shared.secagg import shamir
from fedrec.shared.secagg.errors import SecAggProtocolError
from fedrec.shared.secagg.prg import derive_key

SECRET_BYTES = 32
SHARE_BYTES = 2 + SECRET_BYTES
_NONCE_BYTES = 12


# ---------------------------------------------------------------------------------------------------------------
# X25519


def new_private_key() -> bytes:
    """32 raw bytes of a fresh X25519 private key."""
    return X25519PrivateKey.generate().private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())


def public_key(private: bytes) -> bytes:
    """The 32 raw bytes of the public key of a raw private key."""
    key = X25519PrivateKey.from_private_bytes(private)
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def agree(private: bytes, peer_public: bytes) -> bytes:
    """The raw X25519 shared secret; raises SecAggProtocolError for a malformed or low-order peer key."""
    try:
        peer = X25519PublicKey.from_public_bytes(peer_public)
        return X25519PrivateKey.from_private_bytes(private).exchange(peer)
    except ValueError as e:  # wrong length, or an all-zero shared secret (low-order point)
        raise SecAggProtocolError(f"unusable peer public key: {e}") from None


def pair_label(purpose: bytes, a: int, b: int) -> bytes:
    """HKDF info for a pair: the purpose and both indices in a fixed order, so both ends derive the same key."""
    lo, hi = sorted((a, b))
    return b"fedrec-secagg/v1/" + purpose + b"/" + lo.to_bytes(4, "big") + hi.to_bytes(4, "big")


# ---------------------------------------------------------------------------------------------------------------
# AES-GCM share transport


def _aad(session: bytes, sender: int, receiver: int) -> bytes:
    return b"fedrec-secagg/v1/shares" + session + sender.to_bytes(4, "big") + receiver.to_bytes(4, "big")


def seal(private: bytes, peer_public: bytes, *, session: bytes, sender: int, receiver: int,
         plaintext: bytes) -> bytes:
    """nonce || AES-256-GCM(plaintext), keyed by X25519(private, peer_public), bound to (session, sender, receiver)."""
    key = derive_key(agree(private, peer_public), session=session, label=pair_label(b"share-encryption",
                                                                                     sender, receiver))
    nonce = os.urandom(_NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, _aad(session, sender, receiver))


def open_sealed(private: bytes, peer_public: bytes, *, session: bytes, sender: int, receiver: int,
                ciphertext: bytes) -> bytes:
    """The plaintext of `seal`; raises SecAggProtocolError if it was not sealed by `sender` for `receiver`."""
    key = derive_key(agree(private, peer_public), session=session, label=pair_label(b"share-encryption",
                                                                                     sender, receiver))
    try:
        return AESGCM(key).decrypt(ciphertext[:_NONCE_BYTES], ciphertext[_NONCE_BYTES:],
                                   _aad(session, sender, receiver))
    except (InvalidTag, ValueError):
        raise SecAggProtocolError(f"shares from {sender} to {receiver} fail authentication") from None


# ---------------------------------------------------------------------------------------------------------------
# Shamir


def split_secret(secret: bytes, *, threshold: int, holders: int) -> list[bytes]:
    """`holders` shares of a 32-byte secret, any `threshold` of which reconstruct it; share i has x = i + 1."""
    if len(secret) != SECRET_BYTES:
        raise ValueError(f"secret must be {SECRET_BYTES} bytes, found {len(secret)}")
    if not 1 <= threshold <= holders:
        raise ValueError(f"need 1 <= threshold <= holders, found threshold {threshold}, holders {holders}")
    halves = [shamir.split(secret[i:i + 16], threshold=threshold, holders=holders) for i in (0, 16)]
    return [idx.to_bytes(2, "big") + a + b for idx, (a, b) in enumerate(zip(*halves, strict=True), start=1)]


def combine_secret(shares: list[bytes]) -> bytes:
    """The secret from exactly `threshold` shares (more or fewer give a wrong value, not an error: callers
    check the result against a commitment)."""
    if not shares or any(len(s) != SHARE_BYTES for s in shares):
        raise ValueError(f"expected {SHARE_BYTES}-byte shares, found lengths {[len(s) for s in shares]}")
    points = [(int.from_bytes(s[:2], "big"), s[2:18], s[18:]) for s in shares]
    if len({p[0] for p in points}) != len(points):
        raise ValueError("duplicate share indices")
    return shamir.combine([(i, a) for i, a, _ in points]) + shamir.combine([(i, b) for i, _, b in points])
