"""The Flower ClientApp: one listener's device. Message handlers only; each job lives in its own module.

train:    a release round (`client.statistics`): this device's clipped contribution to one statistic; else
          `client.train`: load the global adapter, train on this user's own history (DP-SGD with record-level
          DP, `client.record_dp`), reply with the adapter *delta*, clipped under user-level DP; with secure
          aggregation reply with public keys only and keep the delta for the SecAgg+ stages
          (`client.secure_aggregation`, registered on this app as `train.secagg_*`).
evaluate: `client.evaluation`: rank the whole catalog for this user's held-out item, reply with metric sums.
query:    the handshakes at the start of a run: the catalog of a deployed run (store it, reply with its hash),
          the node's partition (`fedrec.shared.edge.node_order`), the audit's canary-client role.

What a message asks of the device, its data and its identity come from `client.setup`. Every handler runs under
`client.errors.guarded`: a failure reaches the server as an error code, its detail stays in the device's log.
"""

from __future__ import annotations

from flwr.app import Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedrec.client import evaluation, secure_aggregation, statistics
from fedrec.client import train as train_job
from fedrec.client.errors import guarded
from fedrec.client.setup import is_deployed, store_catalog
from fedrec.shared.edge.node_order import partition_of
from fedrec.shared.hybrid.statistics import is_release
from fedrec.shared.privacy.canaries import canary_client_index
from fedrec.shared.protocol import PARTITION_METRIC, QUERY_CANARY_CLIENTS, QUERY_CATALOG, QUERY_PARTITION, ROLE_METRIC

app = ClientApp()
secure_aggregation.register(app)  # train.secagg_* stage handlers (SecAgg+), on this same app


@app.train()
def train(msg: Message, context: Context) -> Message:
    if is_release(msg.content["config"]):  # the release phase: a contribution to one statistic
        return guarded(statistics.contribute, msg, context)
    return guarded(train_job.train, msg, context)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    return guarded(evaluation.evaluate, msg, context)


@app.query()
def query(msg: Message, context: Context) -> Message:
    return guarded(_query, msg, context)


def _query(msg: Message, context: Context) -> Message:
    """The handshakes at the start of a run, dispatched on what the query's config asks.

    `QUERY_CATALOG`: a deployed run's catalog (`fedrec.shared.edge.catalog`).
    `QUERY_PARTITION`: this node's partition id, or -1 on a deployed device (`fedrec.shared.edge.node_order`).
    `QUERY_CANARY_CLIENTS`: which of the run's audit canary clients this node is (its index), or -1 for a user.
    """
    config = msg.content["config"]
    if QUERY_CATALOG in config:
        return store_catalog(msg, context)
    if QUERY_PARTITION in config:
        metrics = MetricRecord({PARTITION_METRIC: partition_of(context.node_config)})
        return Message(RecordDict({"metrics": metrics}), reply_to=msg)
    index = None if is_deployed(context) else canary_client_index(
        int(context.node_config["partition-id"]), int(context.node_config["num-partitions"]),
        int(config[QUERY_CANARY_CLIENTS]))  # a deployed device is always a user
    return Message(RecordDict({"metrics": MetricRecord({ROLE_METRIC: -1 if index is None else index})}), reply_to=msg)
