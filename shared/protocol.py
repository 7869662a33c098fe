"""What crosses the wire between server and devices: message keys, record layouts and their codecs, nothing else.

Compatibility contract: keys are only ever added, never renamed or given a new meaning; a reader must fail
loudly on a missing key rather than guess. Every key a message may carry is named here, once.

Server -> device, "train" or "evaluate":
    "arrays": ArrayRecord   the global adapter state (float32), one tensor per trainable parameter
    "config": ConfigRecord  the settings a device needs (`RunConfig.client_view()`: dotted keys such as
                            `train.local_epochs`, never a server-only setting) plus the round keys below, which
                            have no dot: SERVER_ROUND, SEED, RUN_ID (the run directory's name, for device reports),
                            DEVICE_STATE_ROOT (a proposed root for simulated devices' state directories; a device's
                            own `state-dir` node setting wins); CATALOG_SHA256 in a deployed run; AUDIT_KEY for a
                            node with audit instructions.
    "released": ArrayRecord the statistics released so far (evaluate messages of a run with releases; see
                            `fedrec.shared.hybrid`), which the device's hybrid scorer combines with its history
A release round's "train" message carries a release's public item list in "arrays" and its parameters in
    the config (keys starting "release-", `fedrec.shared.hybrid.statistics`); the reply's "arrays" hold the
    device's clipped contribution.
Device -> server, train reply:
    "arrays": ArrayRecord   the adapter *delta* (local minus global), float32, same keys as sent
    "metrics": MetricRecord without a privacy setting (or with run.dp_diagnostics): train-seconds, steps,
                            peak-rss-mb, num-examples, train-loss, grad-tokens; with record-level DP
                            RECORD_EPSILON_METRIC (the device's lifetime epsilon so far, every run included)
Device -> server, train reply of a device whose record-level budget is spent (a dropout, not a failure):
    "metrics": MetricRecord DECLINED_METRIC = 1, RECORD_EPSILON_METRIC; no "arrays"
Device -> server, evaluate reply:
    "metrics": MetricRecord RankingMetrics.to_dict() sums (see fedrec.shared.metrics), eval-seconds, peak-rss-mb
                            (without a privacy setting; with one, SecAgg+ keys instead, see below)
With secure aggregation the train message also carries ConfigRecord "secagg" (session id, max-clients), the
train reply carries "secagg" (public keys) instead of "arrays", and three more message types follow
("train.secagg_*"): see `fedrec.shared.secagg.wire`. Under any privacy setting an evaluate message carries the same
setup and its reply only "secagg" (keys); the same three stages then sum the devices' RankingMetrics.to_sums
vectors (`fedrec.shared.secagg.encoding.evaluation_encoding`).
With an empirical audit a train message's config may hold AUDIT_KEY (JSON: the record canaries a host must
include, or an included canary client's direction seed), a canary client's train reply carries CANARY_METRIC = 1
and no loss, and a "query" message (QUERY_CANARY_CLIENTS) asks each node whether it is a canary client
(ROLE_METRIC): see `fedrec.shared.privacy.canaries`.
Handshakes at the start of a run ("query" messages): QUERY_PARTITION asks a node's partition (PARTITION_METRIC,
`fedrec.shared.edge.node_order`); in a deployed run (run.deployment_nodes > 0) QUERY_CATALOG first sends every
node the public catalog, answered with its CATALOG_SHA256 (`fedrec.shared.edge.catalog`).

Under a privacy setting (record_dp, user_dp or secagg: `RunConfig.private`) a train reply's metrics are only
DECLINED_METRIC, RECORD_EPSILON_METRIC and CANARY_METRIC (no timings, step counts or memory figures, unless the
simulation sets run.dp_diagnostics), and an evaluate reply carries no metrics at all: the device answers with
SecAgg+ keys and its RankingMetrics.to_sums vector follows only masked, inside the secure sum.
A failed device replies with an Error whose reason is `device_error_reason(code)`, one of DEVICE_ERRORS: a code and
a fixed text, never a path or a value from the device (the detail stays in the device's own log).

Every metric travels unprotected (no DP, no masking); the privacy reports list them as not covered.
"""

from __future__ import annotations

import resource
from collections import OrderedDict

import numpy as np
from flwr.app import Array, ArrayRecord, MetricRecord

from fedrec.shared.metrics import RankingMetrics

State = dict[str, np.ndarray]  # parameter name -> float32 array

#: the RecordDict key of the released statistics an evaluate message carries (an ArrayRecord)
RELEASED = "released"

# -- round keys of a train/evaluate message's config (no dot: never confused with a setting) -------------------
SERVER_ROUND = "server-round"
SEED = "seed"
RUN_ID = "run-id"
DEVICE_STATE_ROOT = "device-state-root"
CATALOG_SHA256 = "catalog-sha256"
AUDIT_KEY = "audit"
# -- query messages -----------------------------------------------------------------------------------------------
QUERY_CATALOG = "catalog-json"
QUERY_PARTITION = "node-partition"
QUERY_CANARY_CLIENTS = "audit-canary-clients"
# -- reply metrics ------------------------------------------------------------------------------------------------
PARTITION_METRIC = "partition-id"
ROLE_METRIC = "audit-canary-client"
CANARY_METRIC = "audit-canary"
DECLINED_METRIC = "declined"
RECORD_EPSILON_METRIC = "record-epsilon"


# -- device error codes: all a failed device tells the server ------------------------------------------------
DEVICE_ERRORS = {
    "data": "the device could not read or use its listening history",
    "state": "the device's state directory is missing, unreadable or refused the round",
    "catalog": "the device does not hold this run's catalog",
    "config": "the device refused the run's settings or message",
    "replayed": "the device already answered this round (for another adapter or secure-aggregation session)",
    "secagg": "the device refused a secure-aggregation step",
    "internal": "an unexpected error on the device",
}
DEVICE_ERROR_PREFIX = "fedrec device error"


def device_error_reason(code: str) -> str:
    """The whole text of a failed device's error reply: its code and the code's fixed meaning."""
    if code not in DEVICE_ERRORS:
        raise ValueError(f"unknown device error code {code!r}; expected one of {sorted(DEVICE_ERRORS)}")
    return f"{DEVICE_ERROR_PREFIX} {code}: {DEVICE_ERRORS[code]} (details in the device's log)"


def is_setting(key: str) -> bool:
    """A config key that is a run setting (dotted, `section.field`) rather than a round key."""
    return "." in key


def peak_rss_mb() -> float:
    """This process's peak resident set size in MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0



def state_to_record(state: State) -> ArrayRecord:
    return ArrayRecord.from_array_dict(
        OrderedDict((k, Array(np.ascontiguousarray(v, dtype=np.float32))) for k, v in state.items())
    )


def record_to_state(record: ArrayRecord) -> State:
    return {k: np.asarray(v.numpy(), dtype=np.float32) for k, v in record.items()}


def state_size(state: State) -> int:
    """The number of values of a state (the length of its flat vector, `fedrec.shared.secagg.vectors`)."""
    return int(sum(np.asarray(v).size for v in state.values()))


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
