"""What crosses the wire between server and clients, and nothing else.

Compatibility contract: keys are only ever added, never renamed or given a new meaning; a reader must fail
loudly on a missing key rather than guess.

Server -> client (message type "train" or "evaluate"):
    "arrays": ArrayRecord   the global adapter state (float32), one tensor per trainable parameter
    "config": ConfigRecord  RunConfig.to_flat() plus "server-round", "seed", "run-id" (the run directory's
                            name, for device reports) and "device-state-root" (a proposed root for simulated
                            devices' state directories; a device's own `state-dir` node setting wins)
Client -> server, train reply:
    "arrays": ArrayRecord   the adapter *delta* (local minus global), float32, same keys as sent
    "metrics": MetricRecord train-seconds, steps, peak-rss-mb; without DP (or with dp-diagnostics) also
                            num-examples, train-loss, grad-tokens; with record-level DP record-epsilon (the
                            device's cumulative epsilon so far)
Client -> server, train reply of a device whose record-level budget is spent (a dropout, not a failure):
    "metrics": MetricRecord declined = 1, record-epsilon; no "arrays"
Client -> server, evaluate reply:
    "metrics": MetricRecord RankingMetrics.to_dict() sums (see fedrec.shared.metrics), eval-seconds
With secure-aggregation, the train message also carries ConfigRecord "secagg" (session id, max-clients), the
train reply carries "secagg" (public keys) instead of "arrays" and no data-dependent metrics, and three more
message types follow ("train.secagg_*"): see `fedrec.shared.secagg.wire`.
With an empirical audit, a train message's config may also hold "audit" (JSON: the record canaries a host must
include, or an included canary client's direction seed), a canary client's train reply carries "audit-canary" = 1
and no loss, and a "query" message asks each node whether it is a canary client: see `fedrec.shared.audit`.
In a deployed run (`deployment-nodes` > 0) a "query" message first sends every node the public catalog, and
train/evaluate configs also carry "catalog-sha256": see `fedrec.shared.deployment`.

Every metric travels unprotected (no DP, no masking); the privacy reports list them as not covered.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
from flwr.app import Array, ArrayRecord, MetricRecord

from fedrec.shared.metrics import RankingMetrics

State = dict[str, np.ndarray]  # parameter name -> float32 array


def state_to_record(state: State) -> ArrayRecord:
    return ArrayRecord.from_array_dict(
        OrderedDict((k, Array(np.ascontiguousarray(v, dtype=np.float32))) for k, v in state.items())
    )


def record_to_state(record: ArrayRecord) -> State:
    return {k: np.asarray(v.numpy(), dtype=np.float32) for k, v in record.items()}


def state_bytes(state: State) -> int:
    """Payload bytes of a state: float32 values + key names. Flower's own count adds a ~128-byte header per
    tensor (ArrayRecord.count_bytes), about 0.4% more for the default adapter."""
    return sum(int(v.nbytes) + len(k) for k, v in state.items())


def subtract(a: State, b: State) -> State:
    if a.keys() != b.keys():
        raise ValueError(f"states differ in keys: {sorted(set(a) ^ set(b))[:5]}")
    return {k: (a[k] - b[k]).astype(np.float32) for k in a}


def check_delta(delta: State, reference: State) -> None:
    """A client's delta must have exactly the global state's keys and shapes, and finite values."""
    if delta.keys() != reference.keys():
        raise ValueError(f"delta keys differ from the global state: {sorted(set(delta) ^ set(reference))[:5]}")
    for k, v in delta.items():
        if v.shape != reference[k].shape:
            raise ValueError(f"delta {k}: shape {v.shape} != global {reference[k].shape}")
        if not np.all(np.isfinite(v)):
            raise ValueError(f"delta {k}: non-finite values")


def metrics_to_record(m: RankingMetrics, **extra: float) -> MetricRecord:
    d = m.to_dict()
    rec = {k: v for k, v in d.items() if k != "recommended"}
    if d["recommended"]:  # a MetricRecord cannot hold an empty list
        rec["recommended"] = [int(i) for i in d["recommended"]]
    rec.update(extra)
    return MetricRecord(rec)


def record_to_metrics(rec: MetricRecord) -> RankingMetrics:
    d = dict(rec)
    d.setdefault("recommended", [])
    return RankingMetrics.from_dict(d)
