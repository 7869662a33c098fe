"""SecAgg+ as two Flower-free state machines: `SecAggClient` (one per client per round) and `SecAggServer`.

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

Client secrets are wiped as soon as they are no longer needed: the input, b, s_sk and c_sk after the masked
input is sent; only the received shares and the consistency record stay until the next round.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedrec.shared.secagg import crypto, graph, prg
from fedrec.shared.secagg.encoding import add, subtract
from fedrec.shared.secagg.errors import SecAggAborted, SecAggProtocolError

SESSION_BYTES = 16
STAGES = ("advertise-keys", "share-keys", "masked-input", "unmask")


def commitment(seed: bytes) -> bytes:
    """SHA-256 of a 256-bit self-mask seed: hides it, and lets the server check a reconstructed one."""
    return hashlib.sha256(b"fedrec-secagg/v1/self-mask-commitment" + seed).digest()


def self_mask(seed: bytes, *, session: bytes, index: int, words: int, ring_bits: int) -> np.ndarray:
    key = prg.derive_key(seed, session=session, label=b"fedrec-secagg/v1/self-mask/" + index.to_bytes(4, "big"))
    return prg.expand(key, words, ring_bits)


def pairwise_mask(private: bytes, peer_public: bytes, *, session: bytes, a: int, b: int, words: int,
                  ring_bits: int) -> np.ndarray:
    """The mask a and b share: both derive it from X25519 of their s keys, whichever end computes it."""
    key = prg.derive_key(crypto.agree(private, peer_public), session=session,
                         label=crypto.pair_label(b"pairwise-mask", a, b))
    return prg.expand(key, words, ring_bits)


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


# ---------------------------------------------------------------------------------------------------------------
# Client


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


# ---------------------------------------------------------------------------------------------------------------
# Server


class SecAggServer:
    """The server's side of one round, over arbitrary client ids (Flower node ids); indices 1..n are internal.

    Drive it stage by stage: `*_requests()` gives one request per client to send, `receive_*()` takes the
    replies that arrived (a missing client is a dropout) and raises `SecAggAborted` when the round cannot
    complete. `receive_unmask` returns the ring sum of the inputs of `survivors`.
    """

    def __init__(self, *, session: bytes, ring_bits: int, dim: int, advertised: Mapping[int, AdvertisedKeys],
                 degree: int = 0, threshold_fraction: float = 0.5, rng: random.Random | None = None) -> None:
        if len(session) != SESSION_BYTES:
            raise ValueError(f"session id must be {SESSION_BYTES} bytes, found {len(session)}")
        self.session, self.ring_bits, self.dim = session, ring_bits, dim
        self.dtype = np.dtype(np.uint32 if ring_bits == 32 else np.uint64)
        self.dropouts: dict[int, str] = {}  # client id -> stage and reason it left the round
        ids = sorted(advertised)
        # Duplicate public keys would let one key pair stand for two clients: both are left out.
        seen: dict[bytes, int] = {}
        for c in ids:
            for key in (advertised[c].c_pk, advertised[c].s_pk):
                seen[key] = seen.get(key, 0) + 1
        for c in ids:
            if any(seen[k] > 1 for k in (advertised[c].c_pk, advertised[c].s_pk)):
                self.dropouts[c] = "advertise-keys: public key not unique"
        ids = [c for c in ids if c not in self.dropouts]
        self.ids: dict[int, int] = {i: c for i, c in enumerate(ids, start=1)}
        self.index: dict[int, int] = {c: i for i, c in self.ids.items()}
        self.keys: dict[int, AdvertisedKeys] = {i: advertised[c] for i, c in self.ids.items()}
        n = len(ids)
        self.degree = graph.effective_degree(n, degree)
        self.threshold = graph.threshold(self.degree, threshold_fraction) if n >= 2 else 2
        self.counts: dict[str, int] = {"advertise-keys": n}
        if n < self.threshold:
            raise SecAggAborted("advertise-keys", f"{n} client(s) sent usable keys; the protocol needs at least "
                                                  f"t = {self.threshold}")
        self.graph = graph.harary(list(self.ids), self.degree, rng or random.SystemRandom())
        self.u1: set[int] = set(self.ids)
        self.u2: set[int] = set()
        self.u3: set[int] = set()
        self.u4: set[int] = set()
        self._sealed: dict[tuple[int, int], bytes] = {}  # (sender, receiver) -> ciphertext
        self._peers: dict[int, set[int]] = {}  # client -> the neighbours it masked with
        self._total: np.ndarray | None = None
        self._unmask: dict[int, UnmaskRequest] = {}

    @property
    def survivors(self) -> list[int]:
        """The clients whose inputs are in the sum (U3), as client ids."""
        return [self.ids[i] for i in sorted(self.u3)]

    def _drop(self, i: int, stage: str, why: str) -> None:
        self.dropouts[self.ids[i]] = f"{stage}: {why}"

    def _enough(self, stage: str, alive: set[int], of: set[int]) -> None:
        self.counts[stage] = len(alive)
        for i in of - alive:
            self.dropouts.setdefault(self.ids[i], f"{stage}: no reply")
        if len(alive) < self.threshold:
            raise SecAggAborted(stage, f"{len(alive)} of {len(of)} clients answered; t = {self.threshold} needed")

    # -- stage 1

    def share_keys_requests(self) -> dict[int, ShareKeysRequest]:
        return {self.ids[i]: ShareKeysRequest(session=self.session, index=i, threshold=self.threshold,
                                              neighbours={j: self.keys[j] for j in sorted(self.graph[i])})
                for i in sorted(self.u1)}

    def receive_share_keys(self, replies: Mapping[int, ShareKeysReply]) -> None:
        for c, reply in replies.items():
            i = self.index.get(c)
            if i is None or i not in self.u1:
                continue
            if set(reply.ciphertexts) != set(self.graph[i]):
                self._drop(i, "share-keys", "ciphertexts not addressed to exactly its neighbours")
                continue
            self.u2.add(i)
            for j, ct in reply.ciphertexts.items():
                self._sealed[(i, j)] = bytes(ct)
        self._enough("share-keys", self.u2, self.u1)

    # -- stage 2

    def masked_input_requests(self) -> dict[int, MaskedInputRequest]:
        out = {}
        for j in sorted(self.u2):
            self._peers[j] = set(self.graph[j]) & self.u2
            out[self.ids[j]] = MaskedInputRequest(session=self.session,
                                                  ciphertexts={i: self._sealed[(i, j)] for i in sorted(self._peers[j])})
        return out

    def receive_masked_inputs(self, replies: Mapping[int, MaskedInputReply]) -> None:
        total = np.zeros(self.dim, dtype=self.dtype)
        for c, reply in replies.items():
            i = self.index.get(c)
            if i is None or i not in self.u2:
                continue
            v = np.asarray(reply.masked)
            if v.dtype != self.dtype or v.shape != (self.dim,):
                self._drop(i, "masked-input", f"expected ({self.dim},) {self.dtype}, found {v.shape} {v.dtype}")
                continue
            self.u3.add(i)
            total = add(total, v)
        self._enough("masked-input", self.u3, self.u2)
        self._total = total
        self._check_unmaskable()

    def _dropped(self) -> set[int]:
        """Clients that shared keys but whose masked input is missing, and with whom a survivor masked."""
        return {d for d in self.u2 - self.u3 if any(d in self._peers[j] for j in self.u3)}

    def _check_unmaskable(self) -> None:
        """Abort before any share is asked for if, even with every survivor answering, some needed secret would
        have fewer than t holders, or if the survivors' graph is split (partial sums would be exposed)."""
        for j in sorted(self.u3):
            holders = (self._peers[j] & self.u3) | {j}
            if len(holders) < self.threshold:
                raise SecAggAborted("masked-input", f"client {self.ids[j]}: only {len(holders)} holders of its "
                                                    f"self-mask shares remain, t = {self.threshold} needed")
        for d in sorted(self._dropped()):
            holders = self._peers[d] & self.u3
            if len(holders) < self.threshold:
                raise SecAggAborted("masked-input", f"dropped client {self.ids[d]}: only {len(holders)} holders of "
                                                    f"its mask-key shares remain, t = {self.threshold} needed")
        if not graph.is_connected(self.graph, self.u3):
            raise SecAggAborted("masked-input", "the survivors' communication graph is disconnected; unmasking "
                                                "would expose the partial sums of its components")

    # -- stage 3

    def unmask_requests(self) -> dict[int, UnmaskRequest]:
        dropped = self._dropped()
        self._unmask = {j: UnmaskRequest(session=self.session,
                                         alive=tuple(sorted((self._peers[j] & self.u3) | {j})),
                                         dropped=tuple(sorted(self._peers[j] & dropped)))
                        for j in sorted(self.u3)}
        return {self.ids[j]: r for j, r in self._unmask.items()}

    def receive_unmask(self, replies: Mapping[int, UnmaskReply]) -> np.ndarray:
        """The ring sum of the survivors' encoded inputs."""
        for c, reply in replies.items():
            j = self.index.get(c)
            if j is None or j not in self._unmask:
                continue
            req = self._unmask[j]
            if set(reply.self_mask_shares) != set(req.alive) or set(reply.key_shares) != set(req.dropped):
                self._drop(j, "unmask", "shares do not match the request")
                continue
            self.u4.add(j)
        self._enough("unmask", self.u4, self.u3)
        assert self._total is not None
        total = self._total.copy()
        for j in sorted(self.u3):
            shares = [replies[self.ids[h]].self_mask_shares[j] for h in sorted(((self._peers[j] & self.u3) | {j})
                                                                               & self.u4)]
            seed = self._reconstruct(shares, f"self-mask seed of client {self.ids[j]}")
            if commitment(seed) != self.keys[j].b_commitment:
                raise SecAggAborted("unmask", f"the reconstructed self-mask seed of client {self.ids[j]} does not "
                                              f"match its commitment (a bad share)")
            total = subtract(total, self_mask(seed, session=self.session, index=j, words=self.dim,
                                              ring_bits=self.ring_bits))
        for d in sorted(self._dropped()):
            shares = [replies[self.ids[h]].key_shares[d] for h in sorted(self._peers[d] & self.u4)]
            s_sk = self._reconstruct(shares, f"mask key of dropped client {self.ids[d]}")
            if crypto.public_key(s_sk) != self.keys[d].s_pk:
                raise SecAggAborted("unmask", f"the reconstructed mask key of client {self.ids[d]} does not match "
                                              f"its public key (a bad share)")
            for j in sorted(self._peers[d] & self.u3):
                mask = pairwise_mask(s_sk, self.keys[j].s_pk, session=self.session, a=d, b=j, words=self.dim,
                                     ring_bits=self.ring_bits)
                # j added +mask if j < d, else -mask: take back exactly that.
                total = subtract(total, mask) if j < d else add(total, mask)
        return total

    def _reconstruct(self, shares: list[bytes], what: str) -> bytes:
        if len(shares) < self.threshold:
            raise SecAggAborted("unmask", f"{what}: {len(shares)} shares arrived, t = {self.threshold} needed")
        try:
            return crypto.combine_secret(shares[:self.threshold])
        except ValueError as e:
            raise SecAggAborted("unmask", f"{what}: {e}") from None
