"""The server's side of secure aggregation (SecAgg+): drives `SecAggServer` through Flower's Grid.

A round under secure aggregation collects through one `SecureCollector` (`server.round` calls it exactly as it
calls the plain collector: `attach`, `add` per reply, `finish`), which runs one `SecureRound`:

1. `attach` adds the round's setup (a fresh 16-byte session id, the number of clients asked) to the ordinary
   train messages; the clients train, clip, encode, keep their delta and answer with public keys (`read_keys`).
2. `run` sends the three later stages as their own message types (`train.secagg_share_keys`,
   `train.secagg_masked_input`, `train.secagg_unmask`), treats any error reply, malformed reply or missing
   reply as a dropout, and returns the decoded sum of the surviving clients' clipped deltas, or the reason the
   round was aborted (then nothing is released).

What the server holds at the end: public keys, ciphertexts it cannot open, masked uploads that are uniform
ring elements, the shares it asked for, and the exact sum (`SecureSum.total`). It never holds a client's delta.

The same `SecureRound` sums any vector: `server.evaluation` runs one per evaluation under a privacy setting, over
the evaluated devices' metric sums (`fedrec.shared.metrics.RankingMetrics.to_sums`) with their own encoding.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from fedrec.server.release import Aggregate
from fedrec.shared.config import RunConfig
from fedrec.shared.privacy.distributed_dp import WrapAroundError
from fedrec.shared.protocol import State
from fedrec.shared.secagg import wire
from fedrec.shared.secagg.distributed_encoding import DistributedEncoding
from fedrec.shared.secagg.encoding import FixedPointEncoding, round_encoding
from fedrec.shared.secagg.errors import SecAggAborted
from fedrec.shared.secagg.protocol import SESSION_BYTES, AdvertisedKeys
from fedrec.shared.secagg.server import SecAggServer
from fedrec.shared.secagg.vectors import unflatten_state

log = logging.getLogger("fedrec.server")


def _value_bytes(value: Any) -> int:
    if isinstance(value, list):
        return sum(_value_bytes(v) for v in value)
    return len(value) if isinstance(value, bytes | str) else 8  # numbers travel as 64-bit values


def _record_bytes(content: RecordDict) -> int:
    """Payload bytes of a message's records: keys and values (ArrayRecords: Flower's own count). Flower's
    `ConfigRecord.count_bytes` fails on an empty list (flwr 1.41), which a stage message may hold."""
    total = 0
    for record in content.values():
        if isinstance(record, ConfigRecord):
            total += sum(len(k) + _value_bytes(v) for k, v in record.items())
        else:
            total += int(record.count_bytes())
    return total


@dataclass
class SecureSum:
    """The outcome of one secure round.

    `total`: the sum of the survivors' clipped deltas (decoded from the ring, float64 per tensor), None if the
    round was aborted; `survivors`: the node ids whose deltas are in it; `aborted`: "<stage>: <reason>" or None;
    `dropouts`: node id -> where and why it left; `info`: flat figures for the round row (parameters, stage
    counts, bytes, seconds, the quantization error bound).
    """

    total: State | None
    survivors: list[int]
    aborted: str | None
    discarded: str | None = None  # unmasked, but unusable (a distributed-DP wrap-around): its privacy is spent
    dropouts: dict[int, str] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    bytes_up: dict[int, int] = field(default_factory=dict)
    bytes_down: dict[int, int] = field(default_factory=dict)

    def client_rows(self, server_round: int) -> list[dict[str, Any]]:
        """One clients.csv row per node that took part in a secure stage."""
        nodes = sorted(set(self.bytes_up) | set(self.bytes_down) | set(self.dropouts))
        return [{"round": server_round, "node": n, "phase": "secagg", "bytes_down": self.bytes_down.get(n, 0),
                 "bytes_up": self.bytes_up.get(n, 0),
                 "status": f"dropped at {self.dropouts[n]}" if n in self.dropouts else
                 ("ok" if n in self.survivors else "aborted")} for n in nodes]


class SecureRound:
    """One round's secure aggregation: the setup sent with the train messages, then the remaining stages."""

    def __init__(self, cfg: RunConfig, server_round: int, max_clients: int, clip_norm: float | None = None,
                 encoding: FixedPointEncoding | DistributedEncoding | None = None) -> None:
        self.cfg = cfg
        self.server_round = server_round
        self.session = secrets.token_bytes(SESSION_BYTES)
        # a training round's contributions by default (bounded by `clip_norm` when given); an evaluation passes
        # `evaluation_encoding` (both sides derive it)
        self.encoding = encoding or round_encoding(cfg, max(1, max_clients), clip_norm)

    def attach(self, messages: list[Message]) -> None:
        """Add the round setup to the train messages (same session and encoding for every client)."""
        distributed = self.encoding.params.to_json() if isinstance(self.encoding, DistributedEncoding) else None
        setup = wire.round_setup_to_record(self.session, self.encoding.max_clients, self.encoding.clip_norm,
                                           distributed)
        for m in messages:
            m.content[wire.RECORD] = ConfigRecord(dict(setup))

    @staticmethod
    def read_keys(reply: Message) -> AdvertisedKeys:
        """A train reply's advertised keys; KeyError/ValueError if malformed."""
        return wire.keys_from(reply.content)

    def run(self, grid: Grid, advertised: dict[int, AdvertisedKeys], template: State) -> SecureSum:
        """Stages 1-3 over the Grid; the decoded sum of the survivors' deltas, or why the round was aborted."""
        t0 = time.perf_counter()
        dim = int(sum(v.size for v in template.values()))
        needed = getattr(self.encoding, "min_survivors", 0)  # distributed DP: the t whose noise is accounted
        out = SecureSum(total=None, survivors=[], aborted=None)
        out.info.update({"secagg_ring_bits": self.encoding.ring_bits, "secagg_max_clients": self.encoding.max_clients,
                         "secagg_advertised": len(advertised)})
        server: SecAggServer | None = None
        try:
            server = SecAggServer(session=self.session, ring_bits=self.encoding.ring_bits,
                                  dim=self.encoding.vector_dim(dim),
                                  advertised=advertised, degree=self.cfg.secagg.neighbours,
                                  threshold_fraction=self.cfg.secagg.threshold_fraction)
            out.info.update({"secagg_neighbours": server.degree, "secagg_threshold": server.threshold})
            server.receive_share_keys(self._exchange(
                grid, out, wire.SHARE_KEYS, server.share_keys_requests(), wire.share_keys_request_to_record,
                wire.share_keys_reply_from))
            server.receive_masked_inputs(self._exchange(
                grid, out, wire.MASKED_INPUT, server.masked_input_requests(), wire.masked_input_request_to_record,
                wire.masked_input_reply_from))
            if len(server.survivors) < needed:  # never unmask a sum with fewer noise shares than accounted
                raise SecAggAborted("masked-input", f"{len(server.survivors)} survivors, the distributed noise "
                                                    f"is accounted for t = {needed}")
            ring_sum = server.receive_unmask(self._exchange(
                grid, out, wire.UNMASK, server.unmask_requests(), wire.unmask_request_to_record,
                wire.unmask_reply_from))
        except SecAggAborted as e:
            out.aborted = str(e)
        if server is not None:
            out.info.update({f"secagg_{stage.replace('-', '_')}": n for stage, n in server.counts.items()})
            for node, why in server.dropouts.items():
                out.dropouts.setdefault(node, why)
        if out.aborted is None and server is not None:
            out.survivors = server.survivors
            try:
                total = self.encoding.decode_sum(ring_sum, len(out.survivors))
                out.total = unflatten_state(total, template, dtype=np.float64)  # float64: exact to the bound
            except WrapAroundError as e:  # the noisy sum was unmasked (privacy spent) but cannot be read
                out.discarded = f"wrap-around: {e}"
            bound = self.encoding.quantization_error_bound(dim, len(out.survivors))
            out.info.update({"secagg_quantization_error_bound": bound["per_coordinate"],
                             "secagg_quantization_error_bound_l2": bound["l2"]})
            if isinstance(self.encoding, DistributedEncoding):  # public parameters of the clients' noise
                p = self.encoding.params
                out.info.update({"ddp_min_survivors": p.min_survivors, "ddp_scale": p.scale,
                                 "ddp_client_variance": p.client_variance, "ddp_padded_dim": p.padded_dim,
                                 "ddp_noise_std": self.encoding.noise_std(len(out.survivors)),
                                 "ddp_log10_wrap_probability": self.encoding.log10_wrap_probability})
        out.info["secagg_seconds"] = round(time.perf_counter() - t0, 3)
        return out

    def _exchange(self, grid: Grid, out: SecureSum, stage: str, requests: dict[int, Any],
                  to_record: Callable[[Any], Any], parse: Callable[[RecordDict], Any]) -> dict[int, Any]:
        """Send one stage's requests and parse the replies; error, malformed and missing replies are dropouts."""
        label = stage.removeprefix("secagg_").replace("_", "-")  # the protocol's stage name, e.g. "share-keys"
        messages, down, up = [], 0, 0
        for node, req in requests.items():
            content = RecordDict({wire.RECORD: to_record(req)})
            size = _record_bytes(content)
            out.bytes_down[node] = out.bytes_down.get(node, 0) + size
            down += size
            messages.append(Message(content, dst_node_id=node, message_type=wire.MESSAGE_TYPES[stage]))
        timeout = self.cfg.secagg.stage_timeout or None
        replies = list(grid.send_and_receive(messages, timeout=timeout)) if messages else []
        parsed: dict[int, Any] = {}
        for reply in replies:
            node = reply.metadata.src_node_id
            if node not in requests:
                continue
            if reply.has_error():
                out.dropouts.setdefault(node, f"{label}: {reply.error.reason}")
                continue
            try:
                parsed[node] = parse(reply.content)
            except (KeyError, ValueError) as e:
                out.dropouts.setdefault(node, f"{label}: malformed reply ({e})")
                continue
            size = _record_bytes(reply.content)
            out.bytes_up[node] = out.bytes_up.get(node, 0) + size
            up += size
        key = label.replace("-", "_")
        out.info[f"secagg_bytes_down_{key}"] = down
        out.info[f"secagg_bytes_up_{key}"] = up
        return parsed


class SecureCollector:
    """A round's contributions under secure aggregation: public keys per reply, then the survivors' exact sum.

    The same entry points as `server.round.PlainCollector`; the server never holds an individual delta.
    """

    def __init__(self, cfg: RunConfig, server_round: int, sampled: list[int], clip_norm: float | None = None,
                 encoding: DistributedEncoding | None = None) -> None:
        self.round = SecureRound(cfg, server_round, max_clients=len(sampled), clip_norm=clip_norm, encoding=encoding)
        self.advertised: dict[int, AdvertisedKeys] = {}
        self.losses: list[float] = []  # no loss travels under secure aggregation
        self.tokens = 0

    def attach(self, messages: list[Message]) -> None:
        """The round's session id and encoding go with the train messages."""
        self.round.attach(messages)

    def add(self, node: int, reply: Message, template: State) -> dict[str, Any]:
        """The reply's public keys (the delta stays on the device until it is masked); KeyError/ValueError if bad."""
        self.advertised[node] = self.round.read_keys(reply)
        return {"bytes_up": 0, "status": "keys sent"}

    def finish(self, grid: Grid, template: State) -> tuple[Aggregate, dict[str, Any], list[dict[str, Any]]]:
        """Run the remaining SecAgg+ stages: the aggregate, the round row's secagg_* figures (and `dropouts`: node ->
        where and why it left) and one client row per node that took part in a secure stage."""
        secured = self.round.run(grid, self.advertised, template)
        survivors = len(secured.survivors)
        info = {**secured.info, "dropouts": dict(secured.dropouts)}
        aggregate = Aggregate(secured.total, float(survivors), survivors, aborted=secured.aborted,
                              discarded=secured.discarded, encoding=self.round.encoding)
        return aggregate, info, secured.client_rows(self.round.server_round)
