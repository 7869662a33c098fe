"""The secrets behind the masks, derived identically by a client (to add them) and the server (to remove them).

A client's masked input is y + PRG(b) +- PRG(KA(s_sk, s_pk_p)) per neighbour p; the server later takes away the
self masks of the survivors and the pairwise masks of the dropped. Both ends must expand the very same words from
the same seed, session and indices, so the derivation lives here, once, rather than in `client` and `server`.
"""

from __future__ import annotations

import hashlib

import numpy as np

from fedrec.shared.secagg import crypto, prg


def commitment(seed: bytes) -> bytes:
    """SHA-256 of a 256-bit self-mask seed: hides it, and lets the server check a reconstructed one."""
    return hashlib.sha256(b"fedrec-secagg/v1/self-mask-commitment" + seed).digest()


def self_mask(seed: bytes, *, session: bytes, index: int, words: int, ring_bits: int) -> np.ndarray:
    """PRG(b), client `index`'s self mask; session and index in the label tie its words to this round and client."""
    key = prg.derive_key(seed, session=session, label=b"fedrec-secagg/v1/self-mask/" + index.to_bytes(4, "big"))
    return prg.expand(key, words, ring_bits)


def pairwise_mask(private: bytes, peer_public: bytes, *, session: bytes, a: int, b: int, words: int,
                  ring_bits: int) -> np.ndarray:
    """The mask a and b share: both derive it from X25519 of their s keys, whichever end computes it."""
    key = prg.derive_key(crypto.agree(private, peer_public), session=session,
                         label=crypto.pair_label(b"pairwise-mask", a, b))
    return prg.expand(key, words, ring_bits)
