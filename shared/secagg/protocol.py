"""SecAgg+ without Flower: its stages, the session id, and the messages each stage carries.

Stages (Bonawitz et al. 2017, Fig. 4; SecAgg+ neighbourhoods of Bell et al. 2020). U1 >= U2 >= U3 >= U4 are the
clients that answered each stage; every stage tolerates clients that never answer:

0. advertise keys  client: two fresh X25519 key pairs (c: share encryption, s: mask agreement), a 256-bit
                   self-mask seed b, its SHA-256 commitment; sends (c_pk, s_pk, H(b)).      -> U1
1. share keys      server: k-regular graph on U1, threshold t; sends each client its index, t and its
                   neighbours' public keys. client: Shamir-shares b and s_sk (threshold t) among its neighbours
                   and itself; sends one AES-GCM ciphertext per neighbour.                  -> U2
2. masked input    server: forwards to each client the ciphertexts its neighbours in U2 addressed to it.
                   client: y + PRG(b) + sum_p +-PRG(KA(s_sk, s_pk_p)) over those neighbours p (sign + if own
                   index < p), all mod 2^bits.                                              -> U3
3. unmask          server: tells each client in U3 which of its neighbours are alive (in U3) and which dropped
                   (U2 minus U3). client: b-shares of the alive, s_sk-shares of the dropped, and never both
                   kinds for one peer (the consistency rule); refuses to speak about itself as dropped.  -> U4
   server: sum over U3 of the masked inputs, minus PRG(b_j) for every j in U3 (b_j from t shares), minus the
   pairwise masks every j in U3 shared with a dropped neighbour d (s_sk_d from t shares). The pairwise masks
   between two members of U3 cancel in the sum.

The round aborts (`SecAggAborted`, nothing to release) when a stage leaves fewer than t clients, when a needed
secret cannot get t shares, when a reconstructed secret does not match its commitment, or when the survivors'
graph is disconnected (unmasking it would expose partial sums). The server checks feasibility *before* it asks
for any share, so an aborted round reveals no shares it did not need.

The two ends live apart, `fedrec.shared.secagg.client.SecAggClient` (one per client per round) and
`fedrec.shared.secagg.server.SecAggServer`, and share the mask derivation of `fedrec.shared.secagg.masks`. This
module holds only what both ends and `fedrec.shared.secagg.wire` (the same messages as Flower records) must agree
on, so that none of them imports another.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

SESSION_BYTES = 16
STAGES = ("advertise-keys", "share-keys", "masked-input", "unmask")


# ---------------------------------------------------------------------------------------------------------------
# Messages (what each stage carries; `fedrec.shared.secagg.wire` turns them into Flower records)


@dataclass(frozen=True)
class AdvertisedKeys:
    c_pk: bytes  # X25519 public key for share encryption
    s_pk: bytes  # X25519 public key for pairwise mask agreement
    b_commitment: bytes  # SHA-256 commitment to the self-mask seed


@dataclass(frozen=True)
class ShareKeysRequest:
    session: bytes
    index: int
    threshold: int
    neighbours: Mapping[int, AdvertisedKeys]


@dataclass(frozen=True)
class ShareKeysReply:
    ciphertexts: Mapping[int, bytes]  # receiver index -> sealed (b-share || s_sk-share)


@dataclass(frozen=True)
class MaskedInputRequest:
    session: bytes
    ciphertexts: Mapping[int, bytes]  # sender index -> sealed shares addressed to this client


@dataclass(frozen=True)
class MaskedInputReply:
    masked: np.ndarray  # (d,) ring words


@dataclass(frozen=True)
class UnmaskRequest:
    session: bytes
    alive: tuple[int, ...]  # indices whose masked input arrived: answer with their self-mask share
    dropped: tuple[int, ...]  # indices whose masked input did not: answer with their mask-key share


@dataclass(frozen=True)
class UnmaskReply:
    self_mask_shares: Mapping[int, bytes]
    key_shares: Mapping[int, bytes]
