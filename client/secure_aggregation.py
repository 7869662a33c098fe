"""The device's side of secure aggregation (SecAgg+): wiring between Flower messages and `SecAggClient`.

The train handler (`client_app.train`) trains as usual, then, with `secure-aggregation` on, calls `advertise`
instead of replying with its delta: the delta is clipped, fixed-point encoded and kept in `context.state`, and
the reply carries only the round's public keys (and the metrics the train handler allows). The three later
stages are their own message types, handled here on the same ClientApp (`register`):

    train.secagg_share_keys    -> shares of this round's secrets, sealed for each neighbour
    train.secagg_masked_input  -> the masked, encoded delta (the only form in which it leaves the device)
    train.secagg_unmask        -> the shares the server needs to remove the masks, under the consistency rule

Between stages the protocol state lives in `context.state["secagg"]` (per node, per run). A request that
breaks the protocol is answered with an error message naming the rule; the server treats it as a dropout.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flwr.app import ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode

from fedrec.shared.config import RunConfig
from fedrec.shared.privacy.mechanisms import clip_update
from fedrec.shared.protocol import State
from fedrec.shared.secagg import wire
from fedrec.shared.secagg.client import SecAggClient
from fedrec.shared.secagg.encoding import round_encoding
from fedrec.shared.secagg.errors import SecAggProtocolError
from fedrec.shared.secagg.vectors import flatten_state

STATE = "secagg"  # context.state key of this node's SecAggClient for the current round


def _save(context: Context, client: SecAggClient) -> None:
    context.state[STATE] = ConfigRecord(client.to_state())


def _load(context: Context) -> SecAggClient:
    if STATE not in context.state:
        raise SecAggProtocolError("no secure-aggregation round in progress on this device")
    return SecAggClient.from_state(context.state.config_records[STATE])


def _refuse(msg: Message, why: str) -> Message:
    return Message(error=Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=f"secagg refused: {why}"),
                   reply_to=msg)


def advertise(msg: Message, context: Context, cfg: RunConfig, delta: State, metrics: MetricRecord) -> Message:
    """Stage 0: clip and encode the delta, keep it in context.state, reply with public keys and `metrics`."""
    try:
        session, max_clients, clip_norm = wire.round_setup_from(msg.content)
        encoding = round_encoding(cfg, max_clients, clip_norm)
        dim = int(sum(v.size for v in delta.values()))
        clipped, _ = clip_update(delta, clip_norm=encoding.input_clip_norm(dim))
        client, keys = SecAggClient.start(session=session, encoded=encoding.encode(flatten_state(clipped)),
                                          ring_bits=encoding.ring_bits)
    except (KeyError, ValueError) as e:  # SecAggProtocolError and EncodingError are ValueErrors
        return _refuse(msg, str(e))
    _save(context, client)
    return Message(RecordDict({wire.RECORD: wire.keys_to_record(keys), "metrics": metrics}), reply_to=msg)


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
        return _stage(msg, context, wire.share_keys_request_from, SecAggClient.share_keys,
                      wire.share_keys_reply_to_record, wire.RECORD)

    @app.train(wire.MASKED_INPUT)
    def masked_input(msg: Message, context: Context) -> Message:
        return _stage(msg, context, wire.masked_input_request_from, SecAggClient.masked_input,
                      wire.masked_input_reply_to_record, wire.MASKED_RECORD)

    @app.train(wire.UNMASK)
    def unmask(msg: Message, context: Context) -> Message:
        return _stage(msg, context, wire.unmask_request_from, SecAggClient.unmask,
                      wire.unmask_reply_to_record, wire.RECORD)
