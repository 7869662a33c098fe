"""Federated evaluation: each evaluated device ranks the whole catalog for its own held-out item, locally, and
returns metric sums; the server only adds them up.

Every `eval.every` rounds a sample of `eval.fraction` of the users' devices is asked (audit canary clients never
are); after the last round, or when the run stops early, `eval.fraction_final` of them (every user by default).
With `data.holdout = none` no device holds an item out, so nobody is asked. The sample comes from
`default_rng([seed, 1, round])`: public and reproducible, like the non-secret training sample.

How the sums travel depends on the run:

- No privacy setting: each device replies with its own sums, its top-10 ids and its timing, in the clear
  (`plain_sums`); the server merges them.
- Any privacy setting (`RunConfig.private`: record_dp, user_dp or secagg): evaluation leaves a device only inside
  a secure sum (`secure_sums`). Each device encodes `RankingMetrics.to_sums` (hits, NDCG, counts and one count per
  catalog item for coverage) and replies with SecAgg+ keys only; a `SecureRound` over the evaluated devices gives
  the server the total and nothing per user. Fewer than the protocol's threshold of devices: no figures at all.
  The sums carry no DP noise: the reports list them as outside the guarantee.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np
from flwr.app import MessageType

from fedrec.server.sampling import pick
from fedrec.server.secure_aggregation import SecureRound
from fedrec.shared.metrics import RankingMetrics
from fedrec.shared.protocol import record_to_metrics, state_bytes
from fedrec.shared.secagg.encoding import evaluation_encoding

if TYPE_CHECKING:
    from flwr.serverapp import Grid

    from fedrec.server.federation import Federation

SUMS = "eval-sums"  # the one tensor of an evaluation's secure sum


def evaluate(grid: Grid, fed: Federation, server_round: int, client_rows: list[dict[str, Any]], *,
             final: bool = False) -> dict[str, Any]:
    """Evaluate the current global adapter on a sample of users; returns the round row's `eval_*` figures and
    appends one client row per evaluated device to `client_rows` (server-private under a privacy setting).

    `final`: the run's last evaluation (after the last round, or after a budget stop), over `eval.fraction_final`.
    """
    t0 = time.perf_counter()
    cfg = fed.cfg
    if cfg.data.holdout == "none":  # nothing held out: no device could rank a test item
        return {}
    rng = np.random.default_rng([cfg.run.seed, 1, server_round])
    # a sample every `eval.every` rounds keeps evaluation from dominating; the final one covers every user
    fraction = cfg.eval.fraction_final if final or server_round == cfg.run.rounds else cfg.eval.fraction
    chosen = pick(fed.users, max(1, int(round(fraction * len(fed.users)))), rng)
    empty = RankingMetrics(num_items=len(fed.catalog))
    collect = secure_sums if cfg.private else plain_sums
    total, failed, info = collect(grid, fed, server_round, chosen, empty, client_rows)
    out = {f"eval_{k}": v for k, v in total.summary().items()} if total is not None else {}
    out.update({"eval_failed": failed, **info, "eval_seconds": round(time.perf_counter() - t0, 3)})
    return out


def plain_sums(grid: Grid, fed: Federation, server_round: int, chosen: list[int], total: RankingMetrics,
               client_rows: list[dict[str, Any]]) -> tuple[RankingMetrics | None, int, dict[str, Any]]:
    """No privacy setting: every device's own sums in the clear, merged here."""
    replies = grid.send_and_receive(fed.messages(MessageType.EVALUATE, chosen, server_round))
    failed = 0
    for reply in replies:
        row = {"round": server_round, "node": reply.metadata.src_node_id, "phase": "evaluate",
               "bytes_down": state_bytes(fed.global_state), "bytes_up": 0}
        if reply.has_error():
            failed += 1
            client_rows.append({**row, "status": f"error: {reply.error.reason[:200]}"})
            continue
        rec = reply.content["metrics"]
        total = total.merge(record_to_metrics(rec))
        client_rows.append({**row, "seconds": float(rec["eval-seconds"]), "status": "ok"})
    return total, failed, {}


def secure_sums(grid: Grid, fed: Federation, server_round: int, chosen: list[int], empty: RankingMetrics,
                client_rows: list[dict[str, Any]]) -> tuple[RankingMetrics | None, int, dict[str, Any]]:
    """Under a privacy setting: one SecAgg+ sum of the chosen devices' `to_sums` vectors; None if it aborted."""
    template = {SUMS: np.zeros(len(empty.to_sums()))}
    secure = SecureRound(fed.cfg, server_round, max_clients=len(chosen),
                         encoding=evaluation_encoding(max(1, len(chosen)), empty.sums_bound()))
    messages = fed.messages(MessageType.EVALUATE, chosen, server_round)
    secure.attach(messages)
    advertised, failed = {}, set()
    for reply in grid.send_and_receive(messages):
        node = reply.metadata.src_node_id
        row = {"round": server_round, "node": node, "phase": "evaluate", "bytes_down": state_bytes(fed.global_state),
               "bytes_up": 0}
        try:
            if reply.has_error():
                raise ValueError(reply.error.reason[:200])
            advertised[node] = secure.read_keys(reply)
        except (KeyError, ValueError) as e:
            failed.add(node)
            client_rows.append({**row, "status": f"error: {e}"})
            continue
        client_rows.append({**row, "status": "keys sent"})
    summed = secure.run(grid, advertised, template)
    for row in summed.client_rows(server_round):
        client_rows.append({**row, "phase": "evaluate-secagg"})
    failed |= set(summed.dropouts) | (set(chosen) - set(advertised) - failed)
    info = {"eval_secure": "aborted: " + summed.aborted if summed.aborted else
            f"SecAgg+ sum of {len(summed.survivors)} devices"}
    if summed.aborted:
        fed.log.warning("round %d: secure evaluation aborted, no figures: %s", server_round, summed.aborted)
        return None, len(failed), info
    total = RankingMetrics.from_sums(summed.total[SUMS], k=empty.k, num_negatives=empty.num_negatives,
                                     num_items=empty.num_items)
    return total, len(failed), info
