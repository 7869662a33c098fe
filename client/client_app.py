"""The Flower ClientApp: one listener's device. Wiring only; the work is in `fedrec.shared`.

train:    load the global adapter, train on this user's own history, reply with the adapter *delta*.
evaluate: rank the whole catalog for this user's held-out item, reply with metric sums (no history, no scores).
"""

from __future__ import annotations

import resource
import time

import numpy as np
from flwr.app import Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedrec.shared.config import RunConfig
from fedrec.shared.data.split import UserSplit
from fedrec.shared.federation_data import Federation, load_federation
from fedrec.shared.metrics import RankingMetrics
from fedrec.shared.model import trainable_state
from fedrec.shared.training import build_model, prepare_for_scoring, score_users, set_global_state, train_local
from fedrec.shared.wire import State, metrics_to_record, record_to_state, state_to_record, subtract

app = ClientApp()

_ROUND_KEYS = ("server-round", "seed")


def _setup(msg: Message, context: Context) -> tuple[RunConfig, Federation, UserSplit, State, int, int]:
    config = dict(msg.content["config"])
    server_round, seed = int(config.pop("server-round")), int(config.pop("seed"))
    cfg = RunConfig.from_mapping(config, source="server config")
    fed = load_federation(cfg)
    split = fed.split_for(int(context.node_config["partition-id"]), int(context.node_config["num-partitions"]))
    return cfg, fed, split, record_to_state(msg.content["arrays"]), server_round, seed


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


@app.train()
def train(msg: Message, context: Context) -> Message:
    cfg, fed, split, global_state, server_round, seed = _setup(msg, context)
    model = build_model(cfg, fed.catalog)
    set_global_state(model, global_state)
    partition = int(context.node_config["partition-id"])
    local_seed = int(np.random.SeedSequence([seed, server_round, partition]).generate_state(1)[0])
    stats = train_local(model, split, fed.catalog, cfg, seed=local_seed)
    local = {k: v.numpy() for k, v in trainable_state(model).items()}
    delta = subtract(local, global_state)
    metrics = MetricRecord({
        "num-examples": stats.examples,
        "train-loss": stats.loss,
        "train-seconds": stats.seconds,
        "steps": stats.steps,
        "grad-tokens": stats.tokens,
        "peak-rss-mb": _peak_rss_mb(),
    })
    return Message(RecordDict({"arrays": state_to_record(delta), "metrics": metrics}), reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    cfg, fed, split, global_state, server_round, seed = _setup(msg, context)
    t0 = time.perf_counter()
    m = RankingMetrics(num_items=len(fed.catalog))
    if split.evaluated:
        model = build_model(cfg, fed.catalog)
        set_global_state(model, global_state)
        prepare_for_scoring(model, fed.catalog, cfg)
        scores = score_users(model, [split], fed.catalog, cfg)[0]
        partition = int(context.node_config["partition-id"])
        rng = np.random.default_rng([seed, server_round, partition])
        m.add_scores(scores, split.test_item, split.train_items, rng=rng)
    record = metrics_to_record(m, **{"eval-seconds": time.perf_counter() - t0, "peak-rss-mb": _peak_rss_mb()})
    return Message(RecordDict({"metrics": record}), reply_to=msg)

