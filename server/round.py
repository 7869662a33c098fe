"""One training round, as a sequence: sample -> broadcast -> collect -> aggregate -> release.

`train_round` asks the sampled nodes to train on the current global adapter and turns their replies into one
`RoundOutcome`: the released update (or None), the round's row for rounds.json and one row per client message.
Every privacy layer is a component of the run (`server.federation.Federation`), used here through one entry
point each, never a branch on a flag:

- `sampler.sample` (server.sampling): who is asked;
- `audit.train_config` (server.empirical_audit): the extra instructions of canary hosts and canary clients;
- the collector (`PlainCollector` here, or `server.secure_aggregation.SecureCollector`): what the server sees of
  each reply and how the round's sum is formed;
- `release.release` (server.release): the sum becomes the mean update, with noise and a ledger entry under
  user-level DP.

What a reply can be: an error (a dropout), a decline (the device's record-level budget is spent: also a
dropout, counted apart), or a contribution. A plain contribution is a delta the server checks against the global
adapter's layout and, under user-level DP, clips to S itself (the device clipped it already; the server enforces
the bound the accountant assumes). A secure contribution is public keys only; the sum comes later.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from flwr.app import Message, MessageType

from fedrec.server.release import Aggregate, add_weighted
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
class RoundOutcome:
    """What one round produced: the update to apply (None: nothing released) and its public rows."""

    update: State | None
    row: dict[str, Any]
    client_rows: list[dict[str, Any]] = field(default_factory=list)
    record_epsilons: dict[int, float] = field(default_factory=dict)  # node -> cumulative epsilon it reported


class PlainCollector:
    """Deltas in the clear: the server checks each one, clips it under user-level DP, and sums them itself.

    The sum is kept as it grows (float64), never the list of deltas: a round of a thousand clients (audit canary
    clients included) then costs one adapter of memory, not a thousand."""

    def __init__(self, fed: Federation, server_round: int, sampled: list[int]) -> None:
        self.clip_norm = fed.cfg.user_dp.clip_norm if fed.cfg.user_dp.enabled else None
        self.weighted = fed.cfg.run.aggregation_weights == "examples"
        self.total: State | None = None
        self.weight = 0.0
        self.count = 0
        self.losses: list[float] = []
        self.tokens = 0

    def attach(self, messages: list[Message]) -> None:
        """Nothing to add to the train messages."""

    def add(self, node: int, reply: Message, template: State) -> dict[str, Any]:
        """Check, bound and add one reply's delta; returns its client row fields. KeyError/ValueError if bad."""
        delta = record_to_state(reply.content["arrays"])
        check_delta(delta, template)
        m = reply.content.get("metrics") or {}
        if self.clip_norm is not None:  # clients clip; the server enforces the bound it accounts for
            delta, _ = clip_update(delta, clip_norm=self.clip_norm)
        weight = float(m["num-examples"]) if self.weighted else 1.0
        self.total = add_weighted(self.total, delta, weight)
        self.weight += weight
        self.count += 1
        if "train-loss" in m:  # data-dependent: not sent under DP unless run.dp_diagnostics
            self.losses.append(float(m["train-loss"]))
            self.tokens += int(m["grad-tokens"])
        return {"bytes_up": state_bytes(delta), "status": "ok"}

    def finish(self, grid: Grid, template: State) -> tuple[Aggregate, dict[str, Any], list[dict[str, Any]]]:
        """The round's aggregate, extra round-row figures and extra client rows (none for a plain round)."""
        if not self.count or self.weight <= 0:
            return Aggregate(None, 0.0, self.count), {}, []
        return Aggregate(self.total, self.weight, self.count), {}, []


def train_round(grid: Grid, fed: Federation, server_round: int) -> RoundOutcome:
    """Run one training round of `fed` on `grid`; nothing is applied or published here."""
    t0 = time.perf_counter()
    template = fed.global_state
    sampled = fed.sampler.sample(fed.nodes, server_round)
    messages = fed.messages(MessageType.TRAIN, sampled, server_round,
                            per_node=fed.audit.train_config(sampled) if fed.audit is not None else None)
    collector = fed.collector(server_round, sampled)
    collector.attach(messages)
    replies = list(grid.send_and_receive(messages)) if sampled else []
    down = state_bytes(template)
    rows: list[dict[str, Any]] = []
    failures: dict[int, str] = {}  # node -> why: each client counted once per round, whatever stage it left in
    declined, rss, eps, seen, asked = 0, [], {}, set(), set(sampled)
    for reply in replies:
        node = reply.metadata.src_node_id
        if node in seen or node not in asked:  # a second (re-delivered) or unasked reply is never used twice
            fed.log.warning("round %d: node %d: ignored a reply (%s)", server_round, node,
                            "a second one" if node in seen else "not asked in this round")
            continue
        seen.add(node)
        row = {"round": server_round, "node": node, "phase": "train", "bytes_down": down}
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
            fields = collector.add(node, reply, template)
        except (KeyError, ValueError) as e:
            failures[node] = f"bad reply: {e}"
            rows.append({**row, "bytes_up": 0, "status": f"rejected: {e}"})
            continue
        if "peak-rss-mb" in m:  # per-client telemetry: not sent under a privacy setting (RunConfig.private)
            rss.append(float(m["peak-rss-mb"]))
        rows.append({**row, **({"seconds": float(m["train-seconds"])} if "train-seconds" in m else {}), **fields})
    for n in sampled:
        if n not in seen:
            failures[n] = "no reply"
    aggregate, info, extra_rows = collector.finish(grid, template)
    rows.extend(extra_rows)
    for n, why in info.pop("dropouts", {}).items():
        failures.setdefault(n, f"secure aggregation: dropped at {why}")
    for n, why in failures.items():
        fed.log.warning("round %d: node %d: %s", server_round, n, why)
    if aggregate.aborted:
        # Too few clients survived to unmask the sum: nothing is released, nothing enters the user-level
        # ledger (record-level spend on the devices stays counted: they trained).
        fed.log.warning("round %d: secure aggregation aborted, nothing released: %s", server_round, aggregate.aborted)
    update = fed.release.release(aggregate, template, sampled=len(sampled), server_round=server_round)
    train_s = time.perf_counter() - t0
    updates = aggregate.contributors
    status = "ok" if updates else ("noise only" if update is not None else "failed")
    out: dict[str, Any] = {
        "round": server_round,
        "status": f"aborted: {aggregate.aborted}" if aggregate.aborted else status,
        "sampled": len(sampled),
        "updates": updates,
        "failed": len(failures),
        "declined": declined,
        "train_seconds": round(train_s, 3),
        "client_updates_per_s": round(updates / train_s, 4) if train_s > 0 else 0.0,
        "bytes_down_per_client": down,
        "bytes_up_per_client": down,
        "train_loss": float(np.mean(collector.losses)) if collector.losses else float("nan"),
        "grad_tokens_per_s": round(collector.tokens / train_s, 1) if train_s > 0 else 0.0,
        "client_peak_rss_mb": max(rss) if rss else float("nan"),
        **info,
    }
    return RoundOutcome(update, out, rows, eps)
