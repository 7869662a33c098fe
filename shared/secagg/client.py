"""One client's side of a SecAgg+ round, and how it survives between stages (Flower's `context.state`).

Flower calls a ClientApp once per message, so the client is rebuilt from `to_state` at every stage: the state is
a flat mapping of ConfigRecord-compatible values, nothing else. Every request is checked against the stage and
the session before it is answered, because a deviating server must not be able to collect shares of both kinds
for one peer (the consistency rule) or replay a request from another round.

Client secrets are wiped as soon as they are no longer needed: the input, b, s_sk and c_sk after the masked
input is sent; only the received shares and the consistency record stay until the next round.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedrec.shared.secagg import crypto
from fedrec.shared.secagg.encoding import add, subtract
from fedrec.shared.secagg.errors import SecAggProtocolError
from fedrec.shared.secagg.masks import commitment, pairwise_mask, self_mask
from fedrec.shared.secagg.protocol import (
    SESSION_BYTES,
    AdvertisedKeys,
    MaskedInputReply,
    MaskedInputRequest,
    ShareKeysReply,
    ShareKeysRequest,
    UnmaskReply,
    UnmaskRequest,
)


@dataclass
class SecAggClient:
    """One client's side of one round; `to_state`/`from_state` carry it between stages (Flower's context.state).

    Build it with `start`. Every method checks the stage and the session first, and raises
    `SecAggProtocolError` rather than answer a request that breaks the protocol.
    """

    session: bytes
    ring_bits: int
    stage: str
    encoded: np.ndarray | None
    c_sk: bytes
    s_sk: bytes
    seed: bytes
    index: int = 0
    threshold: int = 0
    neighbours: dict[int, AdvertisedKeys] = field(default_factory=dict)
    held: dict[int, tuple[bytes, bytes]] = field(default_factory=dict)  # owner -> (b-share, s_sk-share)
    answered: dict[int, str] = field(default_factory=dict)  # owner -> "self-mask" | "key": the consistency record

    @classmethod
    def start(cls, *, session: bytes, encoded: np.ndarray, ring_bits: int) -> tuple[SecAggClient, AdvertisedKeys]:
        """Stage 0: fresh keys and seed for this round; returns the client and what it advertises."""
        if len(session) != SESSION_BYTES:
            raise SecAggProtocolError(f"session id must be {SESSION_BYTES} bytes, found {len(session)}")
        words = np.asarray(encoded)
        if words.ndim != 1 or words.dtype != np.dtype(np.uint32 if ring_bits == 32 else np.uint64):
            raise ValueError(f"encoded input must be a 1-d uint{ring_bits} vector, found {words.dtype} {words.shape}")
        client = cls(session=session, ring_bits=ring_bits, stage="advertised", encoded=words.copy(),
                     c_sk=crypto.new_private_key(), s_sk=crypto.new_private_key(),
                     seed=os.urandom(crypto.SECRET_BYTES))
        return client, AdvertisedKeys(c_pk=crypto.public_key(client.c_sk), s_pk=crypto.public_key(client.s_sk),
                                      b_commitment=commitment(client.seed))

    def _expect(self, session: bytes, *stages: str) -> None:
        if session != self.session:
            raise SecAggProtocolError("request for another round (session id differs)")
        if self.stage not in stages:
            raise SecAggProtocolError(f"request out of order: this client is at stage {self.stage!r}, "
                                      f"the request needs {' or '.join(map(repr, stages))}")

    def share_keys(self, req: ShareKeysRequest) -> ShareKeysReply:
        """Stage 1: Shamir-share b and s_sk among the neighbours and itself; seal each neighbour's pair."""
        self._expect(req.session, "advertised")
        m = len(req.neighbours) + 1
        if req.index in req.neighbours or not req.neighbours:
            raise SecAggProtocolError(f"bad neighbourhood: index {req.index}, neighbours {sorted(req.neighbours)}")
        if not (2 <= req.threshold <= m and 2 * req.threshold > m):
            raise SecAggProtocolError(f"threshold {req.threshold} must be a strict majority of the {m} share "
                                      f"holders (and >= 2), or shares of both kinds could be collected")
        own = (crypto.public_key(self.c_sk), crypto.public_key(self.s_sk))
        keys = [k for nb in req.neighbours.values() for k in (nb.c_pk, nb.s_pk)] + list(own)
        if len(set(keys)) != len(keys):
            raise SecAggProtocolError("public keys are not all distinct")
        holders = sorted([*req.neighbours, req.index])
        b_shares = crypto.split_secret(self.seed, threshold=req.threshold, holders=m)
        k_shares = crypto.split_secret(self.s_sk, threshold=req.threshold, holders=m)
        sealed = {}
        for holder, b_share, k_share in zip(holders, b_shares, k_shares, strict=True):
            if holder == req.index:
                self.held[holder] = (b_share, k_share)
                continue
            sealed[holder] = crypto.seal(self.c_sk, req.neighbours[holder].c_pk, session=self.session,
                                         sender=req.index, receiver=holder, plaintext=b_share + k_share)
        self.index, self.threshold, self.neighbours = req.index, req.threshold, dict(req.neighbours)
        self.stage = "shared"
        return ShareKeysReply(ciphertexts=sealed)

    def masked_input(self, req: MaskedInputRequest) -> MaskedInputReply:
        """Stage 2: open the neighbours' shares, then y + PRG(b) +- the pairwise masks with those neighbours."""
        self._expect(req.session, "shared")
        senders = sorted(req.ciphertexts)
        strangers = set(senders) - set(self.neighbours)
        if strangers:
            raise SecAggProtocolError(f"shares from non-neighbours {sorted(strangers)}")
        if len(senders) + 1 < self.threshold:
            raise SecAggProtocolError(f"only {len(senders)} neighbours shared keys; this client's self mask could "
                                      f"not be reconstructed from t = {self.threshold} shares")
        for s in senders:
            plain = crypto.open_sealed(self.c_sk, self.neighbours[s].c_pk, session=self.session, sender=s,
                                       receiver=self.index, ciphertext=req.ciphertexts[s])
            if len(plain) != 2 * crypto.SHARE_BYTES:
                raise SecAggProtocolError(f"shares from {s}: expected {2 * crypto.SHARE_BYTES} bytes, "
                                          f"found {len(plain)}")
            self.held[s] = (plain[:crypto.SHARE_BYTES], plain[crypto.SHARE_BYTES:])
        assert self.encoded is not None
        d = self.encoded.size
        out = add(self.encoded, self_mask(self.seed, session=self.session, index=self.index, words=d,
                                          ring_bits=self.ring_bits))
        for p in senders:
            mask = pairwise_mask(self.s_sk, self.neighbours[p].s_pk, session=self.session, a=self.index, b=p,
                                 words=d, ring_bits=self.ring_bits)
            out = add(out, mask) if self.index < p else subtract(out, mask)
        # Nothing below needs the input or the private keys again; keep them no longer than necessary.
        self.encoded, self.seed, self.s_sk, self.c_sk = None, b"", b"", b""
        self.stage = "masked"
        return MaskedInputReply(masked=out)

    def unmask(self, req: UnmaskRequest) -> UnmaskReply:
        """Stage 3: b-shares of alive peers, s_sk-shares of dropped ones; never both kinds for one peer."""
        self._expect(req.session, "masked", "unmasked")
        alive, dropped = set(req.alive), set(req.dropped)
        if alive & dropped:
            raise SecAggProtocolError(f"peers {sorted(alive & dropped)} listed as both alive and dropped")
        if self.index in dropped:
            raise SecAggProtocolError("asked for a share of this client's own mask key: it sent its masked input")
        unknown = (alive | dropped) - set(self.held)
        if unknown:
            raise SecAggProtocolError(f"holds no shares of {sorted(unknown)}")
        if len(alive) < self.threshold:
            raise SecAggProtocolError(f"only {len(alive)} alive holders listed, fewer than t = {self.threshold}")
        contradicted = ({p for p in alive if self.answered.get(p) == "key"}
                        | {p for p in dropped if self.answered.get(p) == "self-mask"})
        if contradicted:
            raise SecAggProtocolError(f"consistency rule: already gave the other kind of share of "
                                      f"{sorted(contradicted)}; a peer is either alive or dropped, never both")
        self.answered.update({p: "self-mask" for p in alive} | {p: "key" for p in dropped})
        self.stage = "unmasked"
        return UnmaskReply(self_mask_shares={p: self.held[p][0] for p in sorted(alive)},
                           key_shares={p: self.held[p][1] for p in sorted(dropped)})

    # -- persistence (ConfigRecord-compatible values: bytes, int, str, lists of int/bytes)

    def to_state(self) -> dict[str, Any]:
        nb = sorted(self.neighbours)
        held = sorted(self.held)
        return {
            "session": self.session, "ring-bits": self.ring_bits, "stage": self.stage,
            "encoded": b"" if self.encoded is None else self.encoded.astype(f"<u{self.ring_bits // 8}").tobytes(),
            "c-sk": self.c_sk, "s-sk": self.s_sk, "seed": self.seed, "index": self.index,
            "threshold": self.threshold,
            "nb-index": nb, "nb-c-pk": [self.neighbours[i].c_pk for i in nb],
            "nb-s-pk": [self.neighbours[i].s_pk for i in nb],
            "nb-commit": [self.neighbours[i].b_commitment for i in nb],
            "held-index": held, "held-b": [self.held[i][0] for i in held], "held-key": [self.held[i][1] for i in held],
            "answered-self-mask": sorted(p for p, k in self.answered.items() if k == "self-mask"),
            "answered-key": sorted(p for p, k in self.answered.items() if k == "key"),
        }

    @classmethod
    def from_state(cls, s: Mapping[str, Any]) -> SecAggClient:
        bits = int(s["ring-bits"])
        raw = bytes(s["encoded"])
        encoded = (np.frombuffer(raw, dtype=f"<u{bits // 8}").astype(np.uint32 if bits == 32 else np.uint64)
                   if raw else None)
        nb = [int(i) for i in s.get("nb-index", [])]
        return cls(
            session=bytes(s["session"]), ring_bits=bits, stage=str(s["stage"]), encoded=encoded,
            c_sk=bytes(s["c-sk"]), s_sk=bytes(s["s-sk"]), seed=bytes(s["seed"]), index=int(s["index"]),
            threshold=int(s["threshold"]),
            neighbours={i: AdvertisedKeys(c_pk=bytes(c), s_pk=bytes(p), b_commitment=bytes(h)) for i, c, p, h in
                        zip(nb, s.get("nb-c-pk", []), s.get("nb-s-pk", []), s.get("nb-commit", []), strict=True)},
            held={int(i): (bytes(b), bytes(k)) for i, b, k in
                  zip(s.get("held-index", []), s.get("held-b", []), s.get("held-key", []), strict=True)},
            answered={**{int(p): "self-mask" for p in s.get("answered-self-mask", [])},
                      **{int(p): "key" for p in s.get("answered-key", [])}},
        )
