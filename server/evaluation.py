"""Federated evaluation: each evaluated device ranks the whole catalog for its own held-out item, locally, and
returns metric sums; the server only adds them up.

Every `eval.every` rounds a sample of `eval.fraction` of the users' devices is asked (audit canary clients never
are); after the last round `eval.fraction_final` of them (every user by default). With `data.holdout = none` no
device holds an item out, so nobody is asked. The sample comes from
`default_rng([seed, 1, round])`: public and reproducible, like the non-secret training sample.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np
from flwr.app import MessageType

from fedrec.server.sampling import pick
from fedrec.shared.metrics import RankingMetrics
from fedrec.shared.protocol import record_to_metrics, state_bytes

if TYPE_CHECKING:
    from flwr.serverapp import Grid

    from fedrec.server.federation import Federation


def evaluate(grid: Grid, fed: Federation, server_round: int, client_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Evaluate the current global adapter on a sample of users; returns the round row's `eval_*` figures and
    appends one client row per evaluated device to `client_rows`."""
    t0 = time.perf_counter()
    cfg = fed.cfg
    if cfg.data.holdout == "none":  # nothing held out: no device could rank a test item
        return {}
    rng = np.random.default_rng([cfg.run.seed, 1, server_round])
    # a sample every `eval.every` rounds keeps evaluation from dominating; the final one covers every user
    fraction = cfg.eval.fraction_final if server_round == cfg.run.rounds else cfg.eval.fraction
    chosen = pick(fed.users, max(1, int(round(fraction * len(fed.users)))), rng)
    replies = grid.send_and_receive(fed.messages(MessageType.EVALUATE, chosen, server_round))
    total = RankingMetrics(num_items=len(fed.catalog))
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
    out = {f"eval_{k}": v for k, v in total.summary().items()}
    out["eval_failed"] = failed
    out["eval_seconds"] = round(time.perf_counter() - t0, 3)
    return out
