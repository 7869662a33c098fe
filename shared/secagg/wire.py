"""The secure-aggregation messages as Flower records: what crosses the wire in each stage, and nothing else.

Compatibility contract (as `fedrec.shared.protocol`): keys are only ever added, never renamed or given a new
meaning; a reader fails loudly (KeyError/ValueError) on a missing or malformed key rather than guess.

Message types are "train.<action>" (Flower routes them to `@app.train("<action>")` handlers). Every record
below is the ConfigRecord "secagg" unless it says otherwise.

Server -> client, "train" (the ordinary train message gets one more record):
    session: bytes (16, random per round), max-clients: int (clients asked this round; fixes the encoding)
Client -> server, train reply (instead of "arrays"):
    c-pk, s-pk: bytes (X25519 public keys), b-commitment: bytes (SHA-256 of the self-mask seed)
Server -> client, "train.secagg_share_keys":
    session, index: int, threshold: int, nb-index: list[int], nb-c-pk, nb-s-pk, nb-commit: list[bytes]
Client -> server, its reply:
    receivers: list[int], ciphertexts: list[bytes] (AES-GCM, one per neighbour)
Server -> client, "train.secagg_masked_input":
    session, senders: list[int], ciphertexts: list[bytes] (those addressed to this client)
Client -> server, its reply: ArrayRecord "secagg-masked" with one Array "masked" (uint32 or uint64, d words)
Server -> client, "train.secagg_unmask":
    session, alive: list[int], dropped: list[int]
Client -> server, its reply:
    self-mask-owners: list[int], self-mask-shares: list[bytes], key-owners: list[int], key-shares: list[bytes]
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, MessageType, RecordDict

from fedrec.shared.secagg.protocol import (
    AdvertisedKeys,
    MaskedInputReply,
    MaskedInputRequest,
    ShareKeysReply,
    ShareKeysRequest,
    UnmaskReply,
    UnmaskRequest,
)

RECORD = "secagg"
MASKED_RECORD = "secagg-masked"
DISTRIBUTED_KEY = "distributed-dp"  # the round setup's distributed-DP parameters (JSON text)
SHARE_KEYS, MASKED_INPUT, UNMASK = "secagg_share_keys", "secagg_masked_input", "secagg_unmask"
MESSAGE_TYPES = {stage: f"{MessageType.TRAIN}.{stage}" for stage in (SHARE_KEYS, MASKED_INPUT, UNMASK)}


def _pairs(keys: list[int], values: list[bytes], what: str) -> dict[int, bytes]:
    if len(keys) != len(values):
        raise ValueError(f"{what}: {len(keys)} indices but {len(values)} values")
    return {int(k): bytes(v) for k, v in zip(keys, values, strict=True)}


def _record(content: RecordDict) -> ConfigRecord:
    if RECORD not in content.config_records:
        raise KeyError(f"missing ConfigRecord {RECORD!r}")
    return content.config_records[RECORD]


# -- round setup (train message) and key advertisement (train reply)


def round_setup_to_record(session: bytes, max_clients: int, clip_norm: float,
                          distributed: Mapping[str, Any] | None = None) -> ConfigRecord:
    """The round's session, the number of clients asked and the L2 bound S the encoding is scaled to; with
    distributed DP also the round's public parameters (`DistributedDpParams.to_json()`, as JSON text)."""
    rec: dict[str, Any] = {"session": session, "max-clients": int(max_clients), "clip-norm": float(clip_norm)}
    if distributed is not None:
        rec[DISTRIBUTED_KEY] = json.dumps(dict(distributed), sort_keys=True)
    return ConfigRecord(rec)


def distributed_params_from(content: RecordDict) -> dict[str, Any] | None:
    """The round's distributed-DP parameters as sent (a JSON object), or None for a round without them."""
    raw = _record(content).get(DISTRIBUTED_KEY)
    if raw is None:
        return None
    obj = json.loads(str(raw))
    if not isinstance(obj, dict):
        raise ValueError(f"{DISTRIBUTED_KEY}: expected a JSON object")
    return obj


def round_setup_from(content: RecordDict) -> tuple[bytes, int, float | None]:
    """(session, max clients, clip norm); the clip norm is None in a setup from before it was sent."""
    rec = _record(content)
    clip = rec.get("clip-norm")
    return bytes(rec["session"]), int(rec["max-clients"]), None if clip is None else float(clip)


def keys_to_record(keys: AdvertisedKeys) -> ConfigRecord:
    return ConfigRecord({"c-pk": keys.c_pk, "s-pk": keys.s_pk, "b-commitment": keys.b_commitment})


def keys_from(content: RecordDict) -> AdvertisedKeys:
    rec = _record(content)
    keys = AdvertisedKeys(c_pk=bytes(rec["c-pk"]), s_pk=bytes(rec["s-pk"]), b_commitment=bytes(rec["b-commitment"]))
    if len(keys.c_pk) != 32 or len(keys.s_pk) != 32 or len(keys.b_commitment) != 32:
        raise ValueError("advertised keys must be 32 bytes each")
    return keys


# -- stage 1


def share_keys_request_to_record(req: ShareKeysRequest) -> ConfigRecord:
    nb = sorted(req.neighbours)
    return ConfigRecord({"session": req.session, "index": req.index, "threshold": req.threshold, "nb-index": nb,
                         "nb-c-pk": [req.neighbours[i].c_pk for i in nb],
                         "nb-s-pk": [req.neighbours[i].s_pk for i in nb],
                         "nb-commit": [req.neighbours[i].b_commitment for i in nb]})


def share_keys_request_from(content: RecordDict) -> ShareKeysRequest:
    rec = _record(content)
    nb = [int(i) for i in rec["nb-index"]]
    cols = [list(rec[k]) for k in ("nb-c-pk", "nb-s-pk", "nb-commit")]
    if any(len(c) != len(nb) for c in cols):
        raise ValueError("neighbour lists differ in length")
    return ShareKeysRequest(session=bytes(rec["session"]), index=int(rec["index"]), threshold=int(rec["threshold"]),
                            neighbours={i: AdvertisedKeys(c_pk=bytes(c), s_pk=bytes(s), b_commitment=bytes(h))
                                        for i, c, s, h in zip(nb, *cols, strict=True)})


def share_keys_reply_to_record(reply: ShareKeysReply) -> ConfigRecord:
    receivers = sorted(reply.ciphertexts)
    return ConfigRecord({"receivers": receivers, "ciphertexts": [reply.ciphertexts[r] for r in receivers]})


def share_keys_reply_from(content: RecordDict) -> ShareKeysReply:
    rec = _record(content)
    return ShareKeysReply(ciphertexts=_pairs(list(rec["receivers"]), list(rec["ciphertexts"]), "ciphertexts"))


# -- stage 2


def masked_input_request_to_record(req: MaskedInputRequest) -> ConfigRecord:
    senders = sorted(req.ciphertexts)
    return ConfigRecord({"session": req.session, "senders": senders,
                         "ciphertexts": [req.ciphertexts[s] for s in senders]})


def masked_input_request_from(content: RecordDict) -> MaskedInputRequest:
    rec = _record(content)
    return MaskedInputRequest(session=bytes(rec["session"]),
                              ciphertexts=_pairs(list(rec["senders"]), list(rec["ciphertexts"]), "ciphertexts"))


def masked_input_reply_to_record(reply: MaskedInputReply) -> ArrayRecord:
    return ArrayRecord({"masked": Array(np.ascontiguousarray(reply.masked))})


def masked_input_reply_from(content: RecordDict) -> MaskedInputReply:
    if MASKED_RECORD not in content.array_records:
        raise KeyError(f"missing ArrayRecord {MASKED_RECORD!r}")
    return MaskedInputReply(masked=content.array_records[MASKED_RECORD]["masked"].numpy())


# -- stage 3


def unmask_request_to_record(req: UnmaskRequest) -> ConfigRecord:
    return ConfigRecord({"session": req.session, "alive": list(req.alive), "dropped": list(req.dropped)})


def unmask_request_from(content: RecordDict) -> UnmaskRequest:
    rec = _record(content)
    return UnmaskRequest(session=bytes(rec["session"]), alive=tuple(int(i) for i in rec["alive"]),
                         dropped=tuple(int(i) for i in rec["dropped"]))


def unmask_reply_to_record(reply: UnmaskReply) -> ConfigRecord:
    def cols(shares: Mapping[int, bytes]) -> tuple[list[int], list[bytes]]:
        owners = sorted(shares)
        return owners, [shares[o] for o in owners]

    b_owners, b_shares = cols(reply.self_mask_shares)
    k_owners, k_shares = cols(reply.key_shares)
    return ConfigRecord({"self-mask-owners": b_owners, "self-mask-shares": b_shares, "key-owners": k_owners,
                         "key-shares": k_shares})


def unmask_reply_from(content: RecordDict) -> UnmaskReply:
    rec = _record(content)
    return UnmaskReply(
        self_mask_shares=_pairs(list(rec["self-mask-owners"]), list(rec["self-mask-shares"]), "self-mask shares"),
        key_shares=_pairs(list(rec["key-owners"]), list(rec["key-shares"]), "key shares"))
