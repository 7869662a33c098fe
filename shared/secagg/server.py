"""The server's side of a SecAgg+ round: the neighbourhood graph, dropout bookkeeping and the unmasked sum.

The threat model trusts the server to follow the protocol (honest-but-curious, docs/secure-aggregation.md), so
what it learns rests on this class asking for no more than it needs: it checks that the round can be unmasked
(enough holders of every needed secret, a connected survivor graph) *before* it asks for any share, and aborts
with `SecAggAborted` rather than release a partial sum.
Stage by stage it follows `fedrec.shared.secagg.protocol`; the masks it removes come from
`fedrec.shared.secagg.masks`, the same derivation the clients used.
"""

from __future__ import annotations

import random
from collections.abc import Mapping

import numpy as np

from fedrec.shared.secagg import crypto, graph
from fedrec.shared.secagg.encoding import add, subtract
from fedrec.shared.secagg.errors import SecAggAborted
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
