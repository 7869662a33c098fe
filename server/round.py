"""One round, as a sequence: ask -> broadcast -> collect -> aggregate -> release.

A round runs one `RoundTask`: what the devices compute and how its sum becomes a released value. There are two:

- the adapter task (`Federation.adapter_task`): sampled devices train on the current global adapter and send
  their deltas; the release is the (noisy) mean update;
- a release task (`server.releases`): every device sends its contribution to one statistic (popularity,
  co-occurrence, text cross); the release is the (noisy) sum.

`run_round` turns the replies into one `RoundOutcome`: the released value (or None), the round's row for
rounds.json and one row per client message. Every privacy layer is a component used through one entry point,
never a branch on a flag: the task's node list (`server.sampling` for the adapter), the audit's per-node
instructions (`server.empirical_audit`), the collector (`PlainCollector` here, or
`server.secure_aggregation.SecureCollector`: what the server sees of each reply and how the sum is formed) and the
task's release (`server.release`: noise and a ledger entry under user-level DP).

What a reply can be: an error (a dropout), a decline (the device's record-level budget is spent: also a
dropout, counted apart), or a contribution. A plain contribution is checked against the task's layout and clipped
by the server to the task's bound (the device clipped it already; the server enforces the bound the accountant
assumes). A secure contribution is public keys only; the sum comes later.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from flwr.app import Message, MessageType

from fedrec.server.release import Aggregate, Release, add_weighted
from fedrec.shared.privacy.mechanisms import clip_update
from fedrec.shared.protocol import (
    DECLINED_METRIC,
    RECORD_EPSILON_METRIC,
    State,
    check_delta,
    record_to_state,
    state_bytes,
)

if TYPE_CHECKING:
    from flwr.serverapp import Grid

    from fedrec.server.federation import Federation


@dataclass
class RoundTask:
    """What one round asks of the devices and how its sum is released.

    `template`: the layout of one contribution (the global adapter, or a zero statistic); `payload`: the arrays
    every message carries (the global adapter, or a release's public item list); `config`: extra message config
    (a release's public parameters); `clip_norm`: the L2 bound the server enforces on plain uploads and scales
    the secure encoding to (None: no bound, a non-private adapter round); `per_node`: extra config per node (the
    audit's instructions).
    """

    phase: str  # "train" or "release:<kind>"
    nodes: list[int]
    template: State
    payload: State
    release: Release
    config: dict[str, Any] = field(default_factory=dict)
    clip_norm: float | None = None
    weighted: bool = False  # aggregation by example counts (non-private adapter rounds only)
    outer: bool = False  # combine contributions as sum x x^T (upper triangle) instead of sum x (no privacy layer)
    per_node: dict[int, dict[str, str]] | None = None


@dataclass
class RoundOutcome:
    """What one round produced: the released value (None: nothing released) and its public rows."""

    update: State | None
    row: dict[str, Any]
    client_rows: list[dict[str, Any]] = field(default_factory=list)
    record_epsilons: dict[int, float] = field(default_factory=dict)  # node -> cumulative epsilon it reported


class PlainCollector:
    """Contributions in the clear: the server checks each one, bounds it, and sums them itself.

    The sum is kept as it grows (float64), never the list of contributions: a round of a thousand clients (audit
    canary clients included) then costs one adapter of memory, not a thousand. A factored statistic
    (`task.outer`) keeps the running upper triangle of sum_i x_i x_i^T instead."""

    def __init__(self, task: RoundTask) -> None:
        self.clip_norm = task.clip_norm
        self.weighted = task.weighted
        self.outer = task.outer
        self.gram = OuterSum()
        self.total: State | None = None
        self.weight = 0.0
        self.count = 0
        self.losses: list[float] = []
        self.tokens = 0

    def attach(self, messages: list[Message]) -> None:
        """Nothing to add to the messages."""

    def add(self, node: int, reply: Message, template: State) -> dict[str, Any]:
        """Check, bound and keep one reply's contribution; returns its client row fields. KeyError/ValueError if bad."""
        delta = record_to_state(reply.content["arrays"])
        check_delta(delta, template)
        m = reply.content.get("metrics") or {}
        if self.clip_norm is not None:  # clients clip; the server enforces the bound it accounts for
            delta, _ = clip_update(delta, clip_norm=self.clip_norm)
        weight = float(m["num-examples"]) if self.weighted else 1.0
        # a factored statistic: the server forms the Gram of the contributions itself
        if self.outer:
            self.gram.add(delta)
        else:
            self.total = add_weighted(self.total, delta, weight)
        self.weight += weight
        self.count += 1
        if "train-loss" in m:  # data-dependent: not sent under DP unless run.dp_diagnostics
            self.losses.append(float(m["train-loss"]))
            self.tokens += int(m["grad-tokens"])
        return {"bytes_up": state_bytes(delta), "status": "ok"}

    def finish(self, grid: Grid, template: State) -> tuple[Aggregate, dict[str, Any], list[dict[str, Any]]]:
        """The round's aggregate, extra round-row figures and extra client rows (none for a plain round)."""
        if self.outer and self.count:
            self.total = self.gram.upper()
        if not self.count or self.weight <= 0:
            return Aggregate(None, 0.0, self.count), {}, []
        return Aggregate(self.total, self.weight, self.count), {}, []


class OuterSum:
    """sum_i x_i x_i^T for every tensor name, as the upper triangle (diagonal included) in the end.

    Contributions are buffered and added `BATCH` at a time as one matrix product (B^T B), which BLAS does in a
    fraction of the time of one outer product per device at a head of thousands of items."""

    BATCH = 256

    def __init__(self) -> None:
        self.full: dict[str, np.ndarray] = {}
        self.rows: dict[str, list[np.ndarray]] = {}

    def add(self, part: State) -> None:
        for key, value in part.items():
            self.rows.setdefault(key, []).append(np.asarray(value, dtype=np.float64).ravel())
            if len(self.rows[key]) >= self.BATCH:
                self._flush(key)

    def _flush(self, key: str) -> None:
        rows = self.rows.pop(key, [])
        if rows:
            b = np.stack(rows)
            self.full[key] = b.T @ b if key not in self.full else self.full[key] + b.T @ b

    def upper(self) -> State:
        for key in list(self.rows):
            self._flush(key)
        return {k: g[np.triu_indices(g.shape[0])] for k, g in self.full.items()}


Collector = Callable[[RoundTask, int], Any]  # (task, server round) -> PlainCollector | SecureCollector


def run_round(grid: Grid, fed: Federation, server_round: int, task: RoundTask) -> RoundOutcome:
    """Run one round of `task` on `grid`; nothing is applied or published here."""
    t0 = time.perf_counter()
    messages = fed.messages(MessageType.TRAIN, task.nodes, server_round, payload=task.payload, extra=task.config,
                            per_node=task.per_node)
    collector = fed.collector(task, server_round)
    collector.attach(messages)
    replies = list(grid.send_and_receive(messages)) if task.nodes else []
    down = state_bytes(task.payload)
    rows: list[dict[str, Any]] = []
    failures: dict[int, str] = {}  # node -> why: each client counted once per round, whatever stage it left in
    declined, rss, eps, seen, asked = 0, [], {}, set(), set(task.nodes)
    for reply in replies:
        node = reply.metadata.src_node_id
        if node in seen or node not in asked:  # a second (re-delivered) or unasked reply is never used twice
            fed.log.warning("round %d: node %d: ignored a reply (%s)", server_round, node,
                            "a second one" if node in seen else "not asked in this round")
            continue
        seen.add(node)
        row = {"round": server_round, "node": node, "phase": task.phase, "bytes_down": down}
        if reply.has_error():
            failures[node] = reply.error.reason
            rows.append({**row, "bytes_up": 0, "status": f"error: {reply.error.reason[:200]}"})
            continue
        m = reply.content.get("metrics") or {}
        if RECORD_EPSILON_METRIC in m:
            eps[node] = float(m[RECORD_EPSILON_METRIC])
        if int(m.get(DECLINED_METRIC, 0)) == 1:  # the device's record-level budget is spent: a dropout
            declined += 1
            rows.append({**row, "bytes_up": 0, "status": "declined: device privacy budget"})
            continue
        try:
            fields = collector.add(node, reply, task.template)
        except (KeyError, ValueError) as e:
            failures[node] = f"bad reply: {e}"
            rows.append({**row, "bytes_up": 0, "status": f"rejected: {e}"})
            continue
        if "peak-rss-mb" in m:  # per-client telemetry: not sent under a privacy setting (RunConfig.private)
            rss.append(float(m["peak-rss-mb"]))
        rows.append({**row, **({"seconds": float(m["train-seconds"])} if "train-seconds" in m else {}), **fields})
    for n in task.nodes:
        if n not in seen:
            failures[n] = "no reply"
    aggregate, info, extra_rows = collector.finish(grid, task.template)
    rows.extend(extra_rows)
    for n, why in info.pop("dropouts", {}).items():
        failures.setdefault(n, f"secure aggregation: dropped at {why}")
    for n, why in failures.items():
        fed.log.warning("round %d (%s): node %d: %s", server_round, task.phase, n, why)
    if aggregate.aborted:
        # Too few clients survived to unmask the sum: nothing is released, nothing enters the user-level
        # ledger (record-level spend on the devices stays counted: they trained).
        fed.log.warning("round %d: secure aggregation aborted, nothing released: %s", server_round, aggregate.aborted)
    update = task.release.release(aggregate, task.template, sampled=len(task.nodes), server_round=server_round)
    train_s = time.perf_counter() - t0
    updates = aggregate.contributors
    status = "ok" if updates else ("noise only" if update is not None else "failed")
    out: dict[str, Any] = {
        "round": server_round,
        "phase": task.phase,
        "status": (f"aborted: {aggregate.aborted}" if aggregate.aborted else
                   f"discarded: {aggregate.discarded}" if aggregate.discarded else status),
        "sampled": len(task.nodes),
        "updates": updates,
        "failed": len(failures),
        "declined": declined,
        "train_seconds": round(train_s, 3),
        "client_updates_per_s": round(updates / train_s, 4) if train_s > 0 else 0.0,
        "bytes_down_per_client": down,
        "bytes_up_per_client": state_bytes(task.template),
        "train_loss": float(np.mean(collector.losses)) if collector.losses else float("nan"),
        "grad_tokens_per_s": round(collector.tokens / train_s, 1) if train_s > 0 else 0.0,
        "client_peak_rss_mb": max(rss) if rss else float("nan"),
        **info,
    }
    return RoundOutcome(update, out, rows, eps)
