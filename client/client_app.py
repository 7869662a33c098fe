"""The Flower ClientApp: one listener's device. Wiring only; the work is in `fedrec.shared`.

train:    load the global adapter, train on this user's own history, reply with the adapter *delta*. With
          record-dp, train with DP-SGD, charge the device's record-level ledger (in its state directory, see
          `device_state`, and in `context.state`), write its signed report, and decline the round (no arrays,
          `declined` = 1) if it would exceed the device's budget (the smaller of the run's and the device's own).
          Under DP only the metrics listed in `privacy_report.SENT_IN_THE_CLEAR` are sent.
evaluate: rank the whole catalog for this user's held-out item, reply with metric sums (no history, no scores).
"""

from __future__ import annotations

import resource
import time

import numpy as np
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedrec.client import secure_aggregation
from fedrec.client.device_state import NODE_STATE_DIR, PROPOSED_STATE_ROOT, DeviceState, resolve_state_dir
from fedrec.client.privacy_report import write_device_report
from fedrec.shared.audit import (
    AUDIT_KEY,
    CANARY_METRIC,
    QUERY_CANARY_CLIENTS,
    ROLE_METRIC,
    AuditInstructions,
    canary_client_index,
    canary_client_update,
)
from fedrec.shared.config import RunConfig
from fedrec.shared.data.split import UserSplit
from fedrec.shared.dp_fedavg import clip_state
from fedrec.shared.dp_sgd import new_record_ledger, record_epsilon, train_local_private
from fedrec.shared.federation_data import Federation, load_federation
from fedrec.shared.metrics import RankingMetrics
from fedrec.shared.model import trainable_state
from fedrec.shared.privacy import PrivacyBudgetExceeded, PrivacyLedger
from fedrec.shared.training import build_model, prepare_for_scoring, score_users, set_global_state, train_local
from fedrec.shared.wire import State, metrics_to_record, record_to_state, state_to_record, subtract

app = ClientApp()
secure_aggregation.register(app)  # train.secagg_* stage handlers (SecAgg+), on this same app

#: node_config key of a device's own record-level budget; the run's `record-epsilon-max` can only lower it.
NODE_EPSILON_MAX = "record-epsilon-max"

# context.state["privacy"]["record-ledger"]: the device's record-level ledger (JSON). It must outlive every round
# of the run, or the device's epsilon would silently restart from 0.
PRIVACY_STATE = "privacy"
RECORD_LEDGER_KEY = "record-ledger"


def _setup(msg: Message, context: Context) -> tuple[RunConfig, Federation, UserSplit | None, State, int, int]:
    """Settings, data and the global adapter of a message; the split is None on an audit canary client."""
    config = dict(msg.content["config"])
    server_round, seed = int(config.pop("server-round")), int(config.pop("seed"))
    config.pop(AUDIT_KEY, None)  # this node's audit instructions, read by train()
    context.state["round"] = ConfigRecord({"run-id": str(config.pop("run-id", "")),
                                           PROPOSED_STATE_ROOT: str(config.pop(PROPOSED_STATE_ROOT, ""))})
    cfg = RunConfig.from_mapping(config, source="server config")
    fed = load_federation(cfg)
    partition, partitions = int(context.node_config["partition-id"]), int(context.node_config["num-partitions"])
    # partitions after the users' are the run's audit canary clients (fedrec.shared.audit): no user, no data
    canary = canary_client_index(partition, partitions, cfg.audit_canary_clients)
    split = None if canary is not None else fed.split_for(partition, partitions - cfg.audit_canary_clients)
    return cfg, fed, split, record_to_state(msg.content["arrays"]), server_round, seed


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def device_subject(context: Context) -> str:
    """Whose ledger it is: a stored ledger for another subject is an error, never silently reused."""
    return f"partition-{int(context.node_config['partition-id'])}"


def load_record_ledger(context: Context, *, subject: str) -> PrivacyLedger:
    """The device's record-level ledger from `context.state`, or an empty one on its first round."""
    if PRIVACY_STATE not in context.state:
        return new_record_ledger(subject=subject)
    text = str(context.state[PRIVACY_STATE][RECORD_LEDGER_KEY])
    ledger = PrivacyLedger.loads(text, where=f"context.state[{PRIVACY_STATE!r}][{RECORD_LEDGER_KEY!r}]")
    if ledger.guarantee != "record-level" or ledger.subject != subject:
        raise ValueError(f"context.state holds a {ledger.guarantee} ledger of {ledger.subject!r}, expected the "
                         f"record-level ledger of {subject!r}")
    return ledger


def save_record_ledger(context: Context, ledger: PrivacyLedger) -> None:
    context.state[PRIVACY_STATE] = ConfigRecord({RECORD_LEDGER_KEY: ledger.dumps()})


def device_state(context: Context) -> DeviceState | None:
    """The device's state directory: its own `state-dir` node setting, else the one the server proposed."""
    proposed = str(context.state["round"][PROPOSED_STATE_ROOT]) if "round" in context.state else ""
    root = resolve_state_dir(context.node_config, proposed, device=device_subject(context))
    return None if root is None else DeviceState(root)


def device_budget(cfg: RunConfig, context: Context) -> RunConfig:
    """Apply the device's own `record-epsilon-max` (node config): the run's setting can lower it, never raise it."""
    own = float(context.node_config.get(NODE_EPSILON_MAX, 0) or 0)
    limits = [x for x in (own, cfg.record_epsilon_max) if x > 0]
    return cfg.replace(record_epsilon_max=min(limits)) if limits else cfg


@app.train()
def train(msg: Message, context: Context) -> Message:
    cfg, fed, split, global_state, server_round, seed = _setup(msg, context)
    audit = AuditInstructions.from_config(msg.content["config"])
    if split is None:  # an audit canary client: it "trains" by sending its random direction (zeros if excluded)
        t0 = time.perf_counter()
        delta = canary_client_update(global_state, seed=audit.direction_seed, norm=cfg.user_clip_norm)
        values = {"train-seconds": time.perf_counter() - t0, "steps": 0, "peak-rss-mb": _peak_rss_mb(),
                  CANARY_METRIC: 1, **({"num-examples": cfg.examples_per_user}
                                       if cfg.aggregation_weights == "examples" else {})}
        if cfg.secure_aggregation:
            return secure_aggregation.advertise(msg, context, cfg, delta, MetricRecord(values))
        return Message(RecordDict({"arrays": state_to_record(delta), "metrics": MetricRecord(values)}), reply_to=msg)
    model = build_model(cfg, fed.catalog)
    set_global_state(model, global_state)
    partition = int(context.node_config["partition-id"])
    local_seed = int(np.random.SeedSequence([seed, server_round, partition]).generate_state(1)[0])
    extra: dict[str, float] = {}
    if cfg.record_dp:
        cfg = device_budget(cfg, context)
        subject = device_subject(context)
        store = device_state(context)
        # The state directory is the durable copy (it survives a restart); context.state mirrors it.
        ledger = store.load_ledger(subject=subject) if store else load_record_ledger(context, subject=subject)
        try:
            stats = train_local_private(model, split, fed.catalog, cfg, seed=local_seed, ledger=ledger,
                                        server_round=server_round, canaries=audit.record_canaries)
        except PrivacyBudgetExceeded:
            # Declined, not failed: no arrays, and the ledger is not charged (nothing was trained or released).
            # record-epsilon travels unprotected (a plain metric, no DP, no masking), like every metric: it is
            # the device's cumulative epsilon so far, a function of the public settings (K fixed slots, q, z)
            # and of the rounds it trained in, which the server knows anyway.
            declined = MetricRecord({"declined": 1, "record-epsilon": record_epsilon(ledger, cfg)})
            return Message(RecordDict({"metrics": declined}), reply_to=msg)
        if store is not None:
            store.save_ledger(ledger)  # charged before the update leaves the device
            if NODE_STATE_DIR in context.node_config:  # a real device keeps the adapter for offline use
                store.save_adapter(global_state, server_round=server_round)
        save_record_ledger(context, ledger)
        if store is not None:
            run_id = str(context.state["round"]["run-id"]) or f"flower-run-{context.run_id}"
            write_device_report(store, cfg, ledger, run_id=run_id, device_id=subject)
        extra["record-epsilon"] = stats.epsilon  # unprotected metric, as above
    else:
        stats = train_local(model, split, fed.catalog, cfg, seed=local_seed, canaries=audit.record_canaries)
    local = {k: v.numpy() for k, v in trainable_state(model).items()}
    delta = subtract(local, global_state)
    if cfg.user_dp:
        # DP-FedAvg: bound this user's whole contribution before it leaves the device (the server adds the noise).
        delta, _ = clip_state(delta, clip_norm=cfg.user_clip_norm)
    values: dict[str, float] = {"train-seconds": stats.seconds, "steps": stats.steps, "peak-rss-mb": _peak_rss_mb()}
    if not (cfg.record_dp or cfg.user_dp or cfg.secure_aggregation) or cfg.dp_diagnostics:
        # Data-dependent figures (history size, loss): not covered by any DP guarantee, so not sent under DP.
        values.update({"num-examples": stats.examples, "train-loss": stats.loss, "grad-tokens": stats.tokens})
    metrics = MetricRecord({**values, **extra})
    if cfg.secure_aggregation:  # the delta stays here, encoded in context.state; only public keys go back
        return secure_aggregation.advertise(msg, context, cfg, delta, metrics)
    return Message(RecordDict({"arrays": state_to_record(delta), "metrics": metrics}), reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    cfg, fed, split, global_state, server_round, seed = _setup(msg, context)
    t0 = time.perf_counter()
    m = RankingMetrics(num_items=len(fed.catalog))
    if split is not None and split.evaluated:  # a canary client (split None) has nothing to evaluate
        model = build_model(cfg, fed.catalog)
        set_global_state(model, global_state)
        prepare_for_scoring(model, fed.catalog, cfg)
        scores = score_users(model, [split], fed.catalog, cfg)[0]
        partition = int(context.node_config["partition-id"])
        rng = np.random.default_rng([seed, server_round, partition])
        m.add_scores(scores, split.test_item, split.train_items, rng=rng)
    record = metrics_to_record(m, **{"eval-seconds": time.perf_counter() - t0, "peak-rss-mb": _peak_rss_mb()})
    return Message(RecordDict({"metrics": record}), reply_to=msg)


@app.query()
def query(msg: Message, context: Context) -> Message:
    """The audit handshake: which of the run's canary clients this node is (its index), or -1 for a user."""
    index = canary_client_index(int(context.node_config["partition-id"]), int(context.node_config["num-partitions"]),
                                int(msg.content["config"][QUERY_CANARY_CLIENTS]))
    return Message(RecordDict({"metrics": MetricRecord({ROLE_METRIC: -1 if index is None else index})}), reply_to=msg)
