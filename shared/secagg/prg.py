"""Mask expansion: a 256-bit secret -> HKDF-SHA256 -> ChaCha20 keystream -> d ring words.

Why this and not Flower's `pseudo_rand_gen`: Flower (1.41/1.42) folds its 32-byte seed into a 32-bit integer
and expands it with numpy's Mersenne Twister, so a mask has at most 2^32 possibilities and MT19937's state is
recoverable from 624 outputs (flwr issue #7522). Here every mask is a ChaCha20 keystream (RFC 8439, via
`cryptography`/OpenSSL) under a 256-bit key, so a mask word is computationally indistinguishable from uniform
and no number of mask words reveals the key or another mask.

Keys are never used directly: `derive_key` runs HKDF-SHA256 (RFC 5869) with the round's session id as salt and
a label naming the purpose (self mask, pairwise mask, share encryption) plus the indices involved, so one
secret never produces the same keystream for two purposes or two rounds. The ChaCha20 nonce can then be fixed
to zero: each derived key encrypts exactly one stream.
"""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_BYTES = 32
_ZERO_NONCE = bytes(16)  # 4-byte block counter + 12-byte nonce, all zero: one stream per derived key


def derive_key(secret: bytes, *, session: bytes, label: bytes) -> bytes:
    """A 32-byte key for one purpose: HKDF-SHA256(ikm=secret, salt=session, info=label)."""
    if len(secret) < 16:
        raise ValueError(f"secret must have >= 128 bits, found {8 * len(secret)}")
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=session, info=label).derive(secret)


def expand(key: bytes, words: int, ring_bits: int) -> np.ndarray:
    """`words` uniform elements of Z_2^ring_bits (uint32 or uint64): the ChaCha20 keystream of `key`."""
    if len(key) != KEY_BYTES:
        raise ValueError(f"key must be {KEY_BYTES} bytes, found {len(key)}")
    if ring_bits not in (32, 64):
        raise ValueError(f"ring_bits must be 32 or 64, found {ring_bits}")
    width = ring_bits // 8
    encryptor = Cipher(algorithms.ChaCha20(key, _ZERO_NONCE), mode=None).encryptor()
    stream = encryptor.update(bytes(words * width))  # keystream XOR zeros = keystream
    return np.frombuffer(stream, dtype=f"<u{width}").astype(np.uint32 if ring_bits == 32 else np.uint64)
