"""What a secure round costs against a plain one, on the real adapter's update size (issue 17).

    python -m fedrec.simulations.bench_secagg --out simulations/results/secure_aggregation.md

Both kinds of round run the production code on both ends - the plain upload (`shared.protocol.state_to_record`,
clipped on the device and again on the server, as `client.train` and `server.round` do) and SecAgg+
(`client.secure_aggregation` on a ClientApp, `server.secure_aggregation.SecureRound` on the server) - through a
Grid that serialises every message and reply to Flower's protobuf wire format and back (`WireGrid`), so the bytes
are the bytes a SuperLink would carry. What a client sends is a random float update of the adapter's exact
shapes (from `build_model` with the default settings), not a trained one: training costs the same in both kinds
of round and is left out; `--train-seconds` puts a measured training time back in for the whole-round ratio.

Plain and secure rounds alternate in the same process (plain, secure, plain, ...), so load from other jobs on
the machine hits both alike; the first round of each kind is a warm-up and is not counted. A dropout is a client
that trained and shared its keys but never sent its masked input (the costliest place for the server: it must
rebuild the dropped client's mask key and remove its k pairwise masks); in a plain round the same clients'
uploads are lost. Flower's own SecAgg+ (`bench_secagg_flower`) runs in the same process as the anchor.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Context, Error, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.serde import message_from_proto, message_to_proto

from fedrec.client import secure_aggregation as client_secagg
from fedrec.server.distributed_release import calibration
from fedrec.server.secure_aggregation import SecureRound
from fedrec.shared.config import RunConfig
from fedrec.shared.privacy.mechanisms import clip_update
from fedrec.shared.protocol import State, record_to_state, state_to_record
from fedrec.shared.secagg import server as secagg_server
from fedrec.shared.secagg import wire
from fedrec.shared.secagg.distributed_encoding import DistributedEncoding, round_parameters
from fedrec.simulations.inprocess import CLIENT_APP_RAISED, InProcessGrid

ARRAYS = "arrays"


def adapter_template(items: int = 600) -> State:
    """The default model's trainable adapter (LoRA, head, item bias) for a catalog of `items` (the default
    synthetic data set has 600): zeros of the exact shapes. The item table is not computed (a zero table of the
    right size), because only the shapes matter here."""
    import torch

    from fedrec.server.deployment import server_population
    from fedrec.shared.model.build import build_model, initial_state

    cfg = RunConfig.from_mapping({"data.source": f"synthetic:users=20,items={items}"})
    catalog = server_population(cfg).catalog
    model = build_model(cfg, catalog, cached=False, table=torch.zeros(len(catalog), 384))
    return {k: np.zeros_like(v) for k, v in initial_state(model).items()}


@dataclass
class Traffic:
    """What the grid saw: serialised bytes per node each way, and seconds each client spent per message type
    (deserialising the request, handling it, serialising its reply)."""

    down: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    up: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    client_s: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    def client_total(self) -> float:
        return sum(sum(v) for v in self.client_s.values())


class WireGrid(InProcessGrid):
    """The in-process Grid with Flower's wire format in between: each message and reply is serialised to protobuf
    and parsed back (its size counted), and the nodes in `drop` never answer a message of type `drop_at`."""

    def __init__(self, app: ClientApp, num_nodes: int) -> None:
        super().__init__(app, num_nodes)
        self.traffic = Traffic()
        self.drop: set[int] = set()
        self.drop_at = ""

    def _handle(self, msg: Message) -> Message:
        node = msg.metadata.dst_node_id
        if node in self.drop and msg.metadata.message_type == self.drop_at:
            return Message(Error(code=CLIENT_APP_RAISED, reason="dropped (benchmark)"), reply_to=msg)
        proto = message_to_proto(msg)
        self.traffic.down[node] += proto.ByteSize()
        wire_bytes = proto.SerializeToString()
        t0 = time.perf_counter()
        reply = super()._handle(message_from_proto(_parse(wire_bytes)))
        proto_reply = message_to_proto(reply)
        raw = proto_reply.SerializeToString()
        self.traffic.client_s[msg.metadata.message_type].append(time.perf_counter() - t0)
        self.traffic.up[node] += len(raw)
        return message_from_proto(_parse(raw))


def _parse(raw: bytes) -> Any:
    from flwr.proto.message_pb2 import Message as ProtoMessage

    proto = ProtoMessage()
    proto.ParseFromString(raw)
    return proto


@dataclass
class Bench:
    """The clients' side: each node's update (drawn once, norm 2S so clipping is active) and the settings."""

    cfg: RunConfig
    template: State
    updates: dict[int, State] = field(default_factory=dict)
    survivor_fraction: float = 0.5
    _calibrations: dict[int, Any] = field(default_factory=dict)

    def distributed_encoding(self, clients: int) -> DistributedEncoding:
        """A round's distributed-DP encoding as a run makes it (z = 1, n = the clients asked, this t fraction)."""
        dim = int(sum(v.size for v in self.template.values()))
        if clients not in self._calibrations:
            self._calibrations[clients] = calibration(clip_norm=self.cfg.user_dp.clip_norm, dim=dim,
                                                      noise_multiplier=1.0, population=clients,
                                                      ring_bits=self.cfg.secagg.ring_bits).params
        return DistributedEncoding(round_parameters(self._calibrations[clients], asked=clients,
                                                    survivor_fraction=self.survivor_fraction))

    def update(self, node: int) -> State:
        if node not in self.updates:
            rng = np.random.default_rng(node)
            raw = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in self.template.items()}
            norm = float(np.sqrt(sum(float(np.sum(np.square(v, dtype=np.float64))) for v in raw.values())))
            self.updates[node] = {k: v * np.float32(2 * self.cfg.user_dp.clip_norm / norm) for k, v in raw.items()}
        return self.updates[node]


def client_app(bench: Bench) -> ClientApp:
    """A ClientApp whose train handler stands in for training (returns the node's update) and then answers as
    fedrec's does: the clipped delta in the clear, or, when the message carries a SecAgg+ setup, public keys
    (`client.secure_aggregation.advertise`); the three SecAgg+ stages are fedrec's own handlers."""
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        delta = bench.update(context.node_id)
        if wire.RECORD in msg.content.config_records:
            return client_secagg.advertise(msg, context, bench.cfg, delta, MetricRecord({}))
        clipped, _ = clip_update(delta, clip_norm=bench.cfg.user_dp.clip_norm)
        return Message(RecordDict({ARRAYS: state_to_record(clipped)}), reply_to=msg)

    client_secagg.register(app)
    return app


@dataclass
class RoundResult:
    """One round: wall seconds in this process, the clients' and the server's share of it, the deployed estimate
    (clients in parallel: the server plus the slowest client of each stage), the unmask time, and the outcome."""

    kind: str
    wall_s: float
    client_s: float
    server_s: float
    parallel_s: float
    unmask_s: float
    stage_client_s: dict[str, float]
    down: dict[int, int]
    up: dict[int, int]
    survivors: int
    aborted: str | None = None


class _UnmaskTimer:
    """Times `SecAggServer.receive_unmask` (the server removing the masks) for the round in progress."""

    seconds = 0.0
    _original = secagg_server.SecAggServer.receive_unmask

    @classmethod
    def install(cls) -> None:
        def timed(self: Any, replies: Any) -> np.ndarray:
            t0 = time.perf_counter()
            try:
                return cls._original(self, replies)
            finally:
                cls.seconds += time.perf_counter() - t0

        secagg_server.SecAggServer.receive_unmask = timed  # type: ignore[method-assign]


def _train_messages(grid: WireGrid, nodes: list[int], global_state: State) -> list[Message]:
    return [Message(RecordDict({ARRAYS: state_to_record(global_state)}), dst_node_id=n, message_type="train")
            for n in nodes]


def run_round(grid: WireGrid, bench: Bench, nodes: list[int], *, secure: bool, server_round: int,
              distributed: bool = False) -> RoundResult:
    """One round of `nodes` (the dropouts are `grid.drop`) and what it cost. `distributed`: a secure round whose
    clients add Skellam noise shares (`user_dp.noise = distributed`, t = ceil(`bench.survivor_fraction` x n))."""
    grid.traffic = Traffic()
    _UnmaskTimer.seconds = 0.0
    template = bench.template
    t0 = time.perf_counter()
    messages = _train_messages(grid, nodes, template)
    aborted, survivors = None, 0
    if secure:
        grid.drop_at = f"train.{wire.MASKED_INPUT}"
        encoding = bench.distributed_encoding(len(nodes)) if distributed else None
        sr = SecureRound(bench.cfg, server_round, max_clients=len(nodes), clip_norm=bench.cfg.user_dp.clip_norm,
                         encoding=encoding)
        sr.attach(messages)
        replies = [r for r in grid.send_and_receive(messages) if not r.has_error()]
        advertised = {r.metadata.src_node_id: sr.read_keys(r) for r in replies}
        out = sr.run(grid, advertised, template)
        aborted, survivors = out.aborted, len(out.survivors)
    else:
        grid.drop_at = "train"
        total = {k: np.zeros(v.shape, dtype=np.float64) for k, v in template.items()}
        for reply in grid.send_and_receive(messages):
            if reply.has_error():
                continue
            delta, _ = clip_update(record_to_state(reply.content.array_records[ARRAYS]),
                                   clip_norm=bench.cfg.user_dp.clip_norm)  # the server clips plain uploads again
            for k, v in delta.items():
                total[k] += v
            survivors += 1
    wall = time.perf_counter() - t0
    traffic = grid.traffic
    client = traffic.client_total()
    stage_max = {t: max(v) for t, v in traffic.client_s.items()}
    kind = "distributed" if distributed else "secure" if secure else "plain"
    return RoundResult(kind=kind, wall_s=wall, client_s=client, server_s=wall - client,
                       parallel_s=wall - client + sum(stage_max.values()), unmask_s=_UnmaskTimer.seconds,
                       stage_client_s={t: statistics.median(v) for t, v in traffic.client_s.items()},
                       down=dict(traffic.down), up=dict(traffic.up), survivors=survivors, aborted=aborted)


def measure(bench: Bench, clients: int, dropout: float, rounds: int, seed: int = 0,
            distributed: bool = False) -> dict[str, list[RoundResult]]:
    """`rounds` counted rounds of each kind (plus one warm-up each), alternating plain, secure (and distributed)."""
    grid = WireGrid(client_app(bench), clients)
    nodes = list(grid.get_node_ids())
    rng = np.random.default_rng(seed)
    kinds = [(False, False), (True, False)] + ([(True, True)] if distributed else [])
    results: dict[str, list[RoundResult]] = {"plain": [], "secure": [], "distributed": []}
    for r in range(rounds + 1):
        grid.drop = set(rng.choice(nodes, size=round(dropout * clients), replace=False).tolist())
        for secure, noisy in kinds:
            res = run_round(grid, bench, nodes, secure=secure, server_round=r + 1, distributed=noisy)
            if r > 0:
                results[res.kind].append(res)
    return results


def summarise(results: dict[str, list[RoundResult]], template: State) -> dict[str, Any]:
    """Medians over the counted rounds, and the bytes per client against plaintext float32 (4 B per parameter)."""
    plain, secure = results["plain"], results["secure"]
    fp32 = 4 * int(sum(v.size for v in template.values()))

    def med(rows: list[RoundResult], attr: str) -> float:
        return statistics.median(getattr(r, attr) for r in rows)

    def per_client(rows: list[RoundResult], way: str) -> float:
        return statistics.median(statistics.median(getattr(r, way).values()) for r in rows)

    ok = [r for r in secure if r.aborted is None]
    stages = sorted({t for r in secure for t in r.stage_client_s})
    return {
        "plain_wall": med(plain, "wall_s"), "secure_wall": med(secure, "wall_s"),
        "plain_parallel": med(plain, "parallel_s"), "secure_parallel": med(secure, "parallel_s"),
        "plain_server": med(plain, "server_s"), "secure_server": med(secure, "server_s"),
        "unmask": med(ok, "unmask_s") if ok else float("nan"),
        "client_stage": {t: statistics.median(r.stage_client_s[t] for r in secure if t in r.stage_client_s)
                         for t in stages},
        "plain_up": per_client(plain, "up"), "plain_down": per_client(plain, "down"),
        "secure_up": per_client(secure, "up"), "secure_down": per_client(secure, "down"), "fp32": fp32,
        "aborted": sum(r.aborted is not None for r in secure), "rounds": len(secure),
        "survivors": statistics.median(r.survivors for r in secure),
        **(_distributed_summary(results["distributed"], per_client) if results.get("distributed") else {}),
    }


def _distributed_summary(rows: list[RoundResult], per_client: Any) -> dict[str, Any]:
    """The distributed-DP rounds' medians (same figures as the secure ones, prefixed)."""
    ok = [r for r in rows if r.aborted is None]
    return {"distributed_wall": statistics.median(r.wall_s for r in rows),
            "distributed_parallel": statistics.median(r.parallel_s for r in rows),
            "distributed_server": statistics.median(r.server_s for r in rows),
            "distributed_unmask": statistics.median(r.unmask_s for r in ok) if ok else float("nan"),
            "distributed_encode": statistics.median(r.stage_client_s.get("train", 0.0) for r in rows),
            "distributed_up": per_client(rows, "up"), "distributed_down": per_client(rows, "down"),
            "distributed_aborted": sum(r.aborted is not None for r in rows)}


def bench_config(clip_norm: float = 1.0, ring_bits: int = 32) -> RunConfig:
    """The settings both ends read: user-level DP's clip S, SecAgg+ with the defaults (auto degree, t)."""
    return RunConfig.from_mapping({"user_dp.enabled": True, "user_dp.clip_norm": clip_norm,
                                   "secagg.ring_bits": ring_bits})


def main(argv: list[str] | None = None) -> None:
    from fedrec.simulations.bench_secagg_report import write_report

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", default="10,50,100", help="clients per round, comma-separated")
    p.add_argument("--dropouts", default="0,0.1,0.3", help="fractions that drop before the masked input")
    p.add_argument("--rounds", type=int, default=5, help="counted rounds of each kind per setting (>= 5)")
    p.add_argument("--items", type=int, default=600, help="catalog size (the item bias is part of the adapter)")
    p.add_argument("--dim", type=int, default=0, help="a flat update of this size instead of the real adapter")
    p.add_argument("--flower", default="10,50,100", help="client counts for Flower's SecAgg+ anchor ('' = none)")
    p.add_argument("--train-seconds", type=float, default=30.6,
                   help="a 100-client training round (simulations/results/scale.md) for the whole-round ratio")
    p.add_argument("--out", type=Path, default=Path("simulations/results/secure_aggregation.md"))
    p.add_argument("--render", action="store_true", help="only rewrite --out from its .json (no measurement)")
    p.add_argument("--distributed", action="store_true",
                   help="also time distributed-DP rounds (clients add Skellam noise shares; t = ceil(0.5 n))")
    argv = sys.argv[1:] if argv is None else argv
    args = p.parse_args(argv)
    if args.render:
        saved = json.loads(args.out.with_suffix(".json").read_text(encoding="utf-8"))
        saved_args = {**saved["args"], "train_seconds": float(saved["args"]["train_seconds"])}
        write_report(args.out, saved["rows"], saved["flower"], {"update": np.zeros(saved["dim"], np.float32)},
                     args=saved_args, argv=saved["argv"], measured=saved.get("measured"))
        return
    _UnmaskTimer.install()
    template = {"update": np.zeros(args.dim, np.float32)} if args.dim else adapter_template(args.items)
    bench = Bench(bench_config(), template)
    rows = []
    for n in (int(x) for x in args.clients.split(",")):
        for drop in (float(x) for x in args.dropouts.split(",")):
            t0 = time.perf_counter()
            s = summarise(measure(bench, n, drop, args.rounds, distributed=args.distributed), template)
            rows.append({"clients": n, "dropout": drop, **s})
            print(f"n={n} drop={drop:.0%}: plain {s['plain_wall']:.2f} s, secure {s['secure_wall']:.2f} s "
                  f"(deployed {s['plain_parallel']:.2f} / {s['secure_parallel']:.2f} s), unmask {s['unmask']:.2f} s, "
                  f"aborted {s['aborted']}/{s['rounds']} [{time.perf_counter() - t0:.0f} s]", flush=True)
    flower = []
    if args.flower:
        from fedrec.simulations.bench_secagg_flower import flower_rounds

        for n in (int(x) for x in args.flower.split(",")):
            t0 = time.perf_counter()
            f = flower_rounds(template, n, args.rounds, clip_norm=bench.cfg.user_dp.clip_norm)
            flower.append({"clients": n, **f})
            print(f"flower n={n}: {f}", flush=True)
    figures = {"rows": rows, "flower": flower, "dim": int(sum(v.size for v in template.values())),
               "args": {k: str(v) for k, v in vars(args).items()}, "argv": argv,
               "measured": {"date": time.strftime("%Y-%m-%d"), "load": os.getloadavg()[0]}}
    args.out.with_suffix(".json").write_text(json.dumps(figures, indent=1, default=float) + "\n", encoding="utf-8")
    write_report(args.out, rows, flower, template, args=vars(args), argv=argv, measured=figures["measured"])
    print(f"wrote {args.out} and {args.out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
