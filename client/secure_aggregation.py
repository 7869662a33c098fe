"""The device's side of secure aggregation (SecAgg+): wiring between Flower messages and `SecAggClient`.

The train handler (`client_app.train`) trains as usual, then, with `secure-aggregation` on, calls `advertise`
instead of replying with its delta: the delta is clipped, fixed-point encoded and kept in `context.state`, and
the reply carries only the round's public keys (and the metrics the train handler allows). Under any privacy
setting the evaluate handler does the same with its metric sums (`advertise_sums`): evaluation leaves a device
only inside a secure sum. The three later stages are their own message types, handled here on the same ClientApp
(`register`), whatever the sum is of:

    train.secagg_share_keys    -> shares of this round's secrets, sealed for each neighbour
    train.secagg_masked_input  -> the masked, encoded delta (the only form in which it leaves the device)
    train.secagg_unmask        -> the shares the server needs to remove the masks, under the consistency rule

Between stages the protocol state lives in `context.state["secagg"]` (per node, per run). A request that
breaks the protocol is answered with the "secagg" error code (the rule it broke goes to the device's log); the
server treats it as a dropout.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedrec.client.errors import error_reply, guarded
from fedrec.shared.config import RunConfig
from fedrec.shared.privacy.distributed_dp import DistributedDpParams
from fedrec.shared.privacy.mechanisms import clip_update
from fedrec.shared.protocol import State
from fedrec.shared.secagg import wire
from fedrec.shared.secagg.client import SecAggClient
from fedrec.shared.secagg.distributed_encoding import DistributedEncoding
from fedrec.shared.secagg.encoding import evaluation_encoding, round_encoding
from fedrec.shared.secagg.errors import SecAggProtocolError
from fedrec.shared.secagg.vectors import flatten_state

log = logging.getLogger("fedrec.client")

STATE = "secagg"  # context.state key of this node's SecAggClient for the current round


def _save(context: Context, client: SecAggClient) -> None:
    context.state[STATE] = ConfigRecord(client.to_state())


def _load(context: Context) -> SecAggClient:
    if STATE not in context.state:
        raise SecAggProtocolError("no secure-aggregation round in progress on this device")
    return SecAggClient.from_state(context.state.config_records[STATE])


def _refuse(msg: Message, why: str) -> Message:
    """A refused stage: the server gets the "secagg" error code only; why (which may hold a value, such as an
    encoded norm) goes to the device's log."""
    log.error("fedrec device error secagg in a %s message: %s", msg.metadata.message_type, why)
    return error_reply(msg, "secagg")


def advertise(msg: Message, context: Context, cfg: RunConfig, delta: State, metrics: MetricRecord) -> Message:
    """Stage 0 of a training round: clip and encode the contribution (an adapter delta, or a release's vector
    bounded by the clip norm the server sent), keep it in context.state, reply with public keys and `metrics`.

    Under distributed DP (the round setup carries `DistributedDpParams`) the encoding also adds this device's
    share of Skellam noise from a CSPRNG-seeded generator (`fedrec.shared.secagg.distributed_encoding`)."""

    def encode(max_clients: int, clip_norm: float | None) -> tuple[np.ndarray, int]:
        distributed = wire.distributed_params_from(msg.content)  # user_dp.noise = distributed: the round's params
        if distributed is not None:  # clip to S, rotate, round, add this device's noise share (never sent alone)
            params = DistributedDpParams.from_json(distributed)
            if params.client_variance <= 0:  # a round without this device's noise share would not be DP
                raise ValueError("distributed DP round parameters with no noise (client_variance 0)")
            noisy = DistributedEncoding(params)
            return noisy.encode(flatten_state(delta)), noisy.ring_bits
        encoding = round_encoding(cfg, max_clients, clip_norm)
        dim = int(sum(v.size for v in delta.values()))
        clipped, _ = clip_update(delta, clip_norm=encoding.input_clip_norm(dim))
        return encoding.encode(flatten_state(clipped)), encoding.ring_bits

    return _advertise(msg, context, encode, metrics)


def advertise_sums(msg: Message, context: Context, sums: np.ndarray, *, bound: float) -> Message:
    """Stage 0 of a secure evaluation: encode this device's metric sums (`RankingMetrics.to_sums`, L2 norm at most
    `bound`), keep them in context.state, reply with public keys only. Metrics are never clipped: a vector over
    the bound is refused (an error reply), not changed."""

    def encode(max_clients: int, _clip_norm: float | None) -> tuple[np.ndarray, int]:
        encoding = evaluation_encoding(max_clients, bound)
        norm = float(np.linalg.norm(sums))
        if not norm <= bound:
            raise ValueError(f"evaluation sums have L2 norm {norm:.6g} > the bound {bound:.6g} of one user")
        return encoding.encode(sums), encoding.ring_bits

    return _advertise(msg, context, encode, None)


def _advertise(msg: Message, context: Context, encode: Callable[[int, float | None], tuple[np.ndarray, int]],
               metrics: MetricRecord | None) -> Message:
    """Start this node's SecAgg+ client on `encode(max_clients, clip_norm)` (ring words, ring bits); reply with its
    keys."""
    try:
        session, max_clients, clip_norm = wire.round_setup_from(msg.content)
        encoded, ring_bits = encode(max_clients, clip_norm)
        client, keys = SecAggClient.start(session=session, encoded=encoded, ring_bits=ring_bits)
    except (KeyError, ValueError) as e:  # SecAggProtocolError and EncodingError are ValueErrors
        return _refuse(msg, str(e))
    _save(context, client)
    content = {wire.RECORD: wire.keys_to_record(keys)}
    if metrics is not None:
        content["metrics"] = metrics
    return Message(RecordDict(content), reply_to=msg)


def _stage(msg: Message, context: Context, parse: Callable[[RecordDict], Any],
           step: Callable[[SecAggClient, Any], Any], reply_record: Callable[[Any], Any], name: str) -> Message:
    try:
        client = _load(context)
        reply = step(client, parse(msg.content))
    except (KeyError, ValueError) as e:
        return _refuse(msg, str(e))
    _save(context, client)
    return Message(RecordDict({name: reply_record(reply)}), reply_to=msg)


def register(app: ClientApp) -> None:
    """Add the three SecAgg+ stage handlers to `app` (message types `wire.MESSAGE_TYPES`)."""

    @app.train(wire.SHARE_KEYS)
    def share_keys(msg: Message, context: Context) -> Message:
        return guarded(lambda m, c: _stage(m, c, wire.share_keys_request_from, SecAggClient.share_keys,
                                           wire.share_keys_reply_to_record, wire.RECORD), msg, context)

    @app.train(wire.MASKED_INPUT)
    def masked_input(msg: Message, context: Context) -> Message:
        return guarded(lambda m, c: _stage(m, c, wire.masked_input_request_from, SecAggClient.masked_input,
                                           wire.masked_input_reply_to_record, wire.MASKED_RECORD), msg, context)

    @app.train(wire.UNMASK)
    def unmask(msg: Message, context: Context) -> Message:
        return guarded(lambda m, c: _stage(m, c, wire.unmask_request_from, SecAggClient.unmask,
                                           wire.unmask_reply_to_record, wire.RECORD), msg, context)
