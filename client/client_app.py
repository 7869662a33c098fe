"""The Flower ClientApp: one listener's device. Wiring only; the work is in `fedrec.shared`.

train:    load the global adapter, train on this user's own history, reply with the adapter *delta*. With
          record-dp, train with DP-SGD, charge the device's record-level ledger (in its state directory, see
          `device_state`, and in `context.state`), write its signed report, and decline the round (no arrays,
          `declined` = 1) if it would exceed the device's budget (the smaller of the run's and the device's own).
          Under DP only the metrics listed in `privacy_report.SENT_IN_THE_CLEAR` are sent.
evaluate: rank the whole catalog for this user's held-out item, reply with metric sums (no history, no scores).
query:    the handshakes at the start of a run: the catalog of a deployed run (store it, reply with its hash),
          the node's partition (`fedrec.shared.node_order`), the audit's canary-client role.

Where the data comes from. In a simulation (node config `partition-id`, `num-partitions`) every client parses
the run's data set once per process and takes split `partition-id`. A *deployed device* (node config `data-path`,
as `fedrec client --data PATH` sets it) reads only that file: one user's history (node config `user` picks one if
the file holds several), mapped onto the public catalog the server sent (`fedrec.shared.deployment`, stored in
the state directory) and split with the run's split settings; it reads nothing else private. A deployed device
needs `state-dir` in its node config; its identity (ledger subject, report device id) is node config `device-id`
or else the fingerprint of its signing key, never a partition number. It answers each (run, round) once: see
`device_state` for the crash-safe round record, and `train` for when a re-delivered round is refused.
"""

from __future__ import annotations

import hashlib
import logging
import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedrec.client import secure_aggregation
from fedrec.client.device_state import (
    NODE_DATA_PATH,
    NODE_DEVICE_ID,
    NODE_STATE_DIR,
    NODE_USER,
    PROPOSED_STATE_ROOT,
    DeviceState,
    RoundRecord,
    resolve_state_dir,
    state_digest,
)
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
from fedrec.shared.data.load import load_history
from fedrec.shared.data.split import UserSplit, split_users
from fedrec.shared.data.types import Catalog, DataFormatError
from fedrec.shared.deployment import CATALOG_SHA256, QUERY_CATALOG, catalog_from_bytes, catalog_sha256
from fedrec.shared.dp_fedavg import clip_state
from fedrec.shared.dp_sgd import new_record_ledger, record_epsilon, train_local_private
from fedrec.shared.federation_data import load_federation
from fedrec.shared.metrics import RankingMetrics
from fedrec.shared.model import trainable_state
from fedrec.shared.node_order import PARTITION_METRIC, QUERY_PARTITION, partition_of
from fedrec.shared.privacy import PrivacyBudgetExceeded, PrivacyLedger
from fedrec.shared.secagg import wire as secagg_wire
from fedrec.shared.training import build_model, prepare_for_scoring, score_users, set_global_state, train_local
from fedrec.shared.wire import State, metrics_to_record, record_to_state, state_to_record, subtract

log = logging.getLogger("fedrec.client")

app = ClientApp()
secure_aggregation.register(app)  # train.secagg_* stage handlers (SecAgg+), on this same app

#: node_config key of a device's own record-level budget; the run's `record-epsilon-max` can only lower it.
NODE_EPSILON_MAX = "record-epsilon-max"

# context.state["privacy"]["record-ledger"]: the device's record-level ledger (JSON). It must outlive every round
# of the run, or the device's epsilon would silently restart from 0.
PRIVACY_STATE = "privacy"
RECORD_LEDGER_KEY = "record-ledger"


@dataclass(frozen=True)
class RoundSetup:
    """What one train or evaluate message asks of this node, with its data."""

    cfg: RunConfig
    catalog: Catalog
    split: UserSplit | None  # None on an audit canary client
    global_state: State
    server_round: int
    seed: int
    run_id: str
    local_key: int  # per-node component of local seeds: the partition id, or a hash of a deployed device's id


def is_deployed(context: Context) -> bool:
    """A deployed device names its own history file in its node config; a simulated node has a partition."""
    return bool(str(context.node_config.get(NODE_DATA_PATH, "") or ""))


def deployed_state(context: Context) -> DeviceState:
    """A deployed device's state directory (node config `state-dir`): required, never proposed by the server."""
    own = str(context.node_config.get(NODE_STATE_DIR, "") or "")
    if not own:
        raise ValueError(f"a deployed device (node config {NODE_DATA_PATH}="
                         f"{context.node_config.get(NODE_DATA_PATH)!r}) needs node config {NODE_STATE_DIR!r}: its "
                         "privacy ledger, signing key, catalog and last adapter live there "
                         "(fedrec client --state-dir DIR)")
    return DeviceState(Path(own))


# -- a deployed device's data: the catalog the server sent, its own history file ------------------------------------

_CATALOGS: dict[str, Catalog] = {}  # SHA-256 -> parsed catalog (per process)
_SPLITS: dict[tuple, UserSplit] = {}  # (path, mtime, size, user, catalog hash, split settings) -> split


def _stored_catalog(store: DeviceState, expected: str) -> Catalog:
    """The catalog in the state directory, which must be the run's (`expected` SHA-256, from the message)."""
    if not expected:
        raise ValueError(f"the server runs a deployed federation but its message names no {CATALOG_SHA256!r}")
    data = store.load_catalog_bytes()
    digest = catalog_sha256(data)
    if digest != expected:
        raise ValueError(f"{store.catalog_path}: this device's catalog (SHA-256 {digest}) is not the run's "
                         f"({expected}); the server sends its catalog at the start of a run (query), so this device "
                         "missed it: restart the device before the run starts")
    if digest not in _CATALOGS:
        _CATALOGS.clear()
        _CATALOGS[digest] = catalog_from_bytes(data, where=str(store.catalog_path))
    return _CATALOGS[digest]


def _own_split(context: Context, catalog: Catalog, catalog_hash: str, cfg: RunConfig) -> UserSplit:
    """This device's user, read from its `data-path` onto `catalog` and split with the run's split settings.

    Cached per process, keyed by the file (path, mtime, size), the user, the catalog and the split settings.
    """
    path = Path(str(context.node_config[NODE_DATA_PATH])).expanduser()
    user = str(context.node_config.get(NODE_USER, "") or "") or None
    try:
        st = os.stat(path)
    except OSError as e:
        raise ValueError(f"node config {NODE_DATA_PATH}={str(path)!r}: cannot read the history file: {e}") from None
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size, user, catalog_hash, cfg.data.split_seed,
           cfg.data.min_interactions)
    if key in _SPLITS:
        return _SPLITS[key]
    try:
        history, summary = load_history(path, catalog, user=user)
    except DataFormatError as e:
        hint = f" (set node config {NODE_USER!r} to choose the user)" if user is None else ""
        raise ValueError(f"node config {NODE_DATA_PATH}: {e}{hint}") from None
    if len(history) == 0:
        raise ValueError(f"node config {NODE_DATA_PATH}={str(path)!r}: no item of user {history.user_id!r} is in "
                         f"the run's catalog of {len(catalog)} items; {'; '.join(summary.lines())}")
    level = logging.WARNING if summary.skipped else logging.INFO  # skipped rows are counted, never dropped silently
    for line in summary.lines():
        log.log(level, "history %s", line)
    split = split_users([history], seed=cfg.data.split_seed, min_interactions=cfg.data.min_interactions)[0]
    if len(_SPLITS) >= 4:
        _SPLITS.clear()
    _SPLITS[key] = split
    return split


def _device_key(subject: str) -> int:
    return int.from_bytes(hashlib.sha256(subject.encode()).digest()[:4], "big")


# -- every message ----------------------------------------------------------------------------------------------

def _setup(msg: Message, context: Context) -> RoundSetup:
    """Settings, data and the global adapter of a message."""
    config = dict(msg.content["config"])
    server_round, seed = int(config.pop("server-round")), int(config.pop("seed"))
    config.pop(AUDIT_KEY, None)  # this node's audit instructions, read by train()
    catalog_hash = str(config.pop(CATALOG_SHA256, ""))
    run_id = str(config.pop("run-id", "")) or f"flower-run-{context.run_id}"
    context.state["round"] = ConfigRecord({"run-id": run_id,
                                           PROPOSED_STATE_ROOT: str(config.pop(PROPOSED_STATE_ROOT, ""))})
    cfg = RunConfig.from_mapping({k: v for k, v in config.items() if "." in k}, source="server config")
    global_state = record_to_state(msg.content["arrays"])
    if is_deployed(context):
        if not cfg.run.deployment_nodes:
            raise ValueError(f"this is a deployed device (node config {NODE_DATA_PATH}) but the server runs a "
                             "simulation (deployment-nodes = 0), whose clients read the server's data set")
        if cfg.run.dp_diagnostics:  # a simulation-only setting: a device never sends loss or counts outside DP
            cfg = cfg.updated({"run.dp_diagnostics": False})
        catalog = _stored_catalog(deployed_state(context), catalog_hash)
        split = _own_split(context, catalog, catalog_hash, cfg)
        return RoundSetup(cfg, catalog, split, global_state, server_round, seed, run_id,
                          _device_key(device_subject(context)))
    if cfg.run.deployment_nodes:
        raise ValueError(f"the server runs a deployed federation (deployment-nodes = {cfg.run.deployment_nodes}) but "
                         f"this node has no node config {NODE_DATA_PATH!r} (its own history file)")
    fed = load_federation(cfg)
    partition, partitions = int(context.node_config["partition-id"]), int(context.node_config["num-partitions"])
    # partitions after the users' are the run's audit canary clients (fedrec.shared.audit): no user, no data
    canary = canary_client_index(partition, partitions, cfg.audit.canary_clients)
    split = None if canary is not None else fed.split_for(partition, partitions - cfg.audit.canary_clients)
    return RoundSetup(cfg, fed.catalog, split, global_state, server_round, seed, run_id, partition)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def device_subject(context: Context) -> str:
    """Whose ledger it is: a stored ledger for another subject is an error, never silently reused.

    Simulation: `partition-<id>`. Deployed device: node config `device-id`, else its signing key's fingerprint.
    """
    if is_deployed(context):
        own = str(context.node_config.get(NODE_DEVICE_ID, "") or "")
        return own or deployed_state(context).key_fingerprint()
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
    if is_deployed(context):
        return deployed_state(context)
    proposed = str(context.state["round"][PROPOSED_STATE_ROOT]) if "round" in context.state else ""
    root = resolve_state_dir(context.node_config, proposed, device=device_subject(context))
    return None if root is None else DeviceState(root)


def device_budget(cfg: RunConfig, context: Context) -> RunConfig:
    """Apply the device's own `record-epsilon-max` (node config): the run's setting can lower it, never raise it."""
    own = float(context.node_config.get(NODE_EPSILON_MAX, 0) or 0)
    limits = [x for x in (own, cfg.record_dp.epsilon_max) if x > 0]
    return cfg.updated({"record_dp.epsilon_max": min(limits)}) if limits else cfg


# -- train ------------------------------------------------------------------------------------------------------

def _reply(msg: Message, context: Context, cfg: RunConfig, delta: State, metrics: MetricRecord) -> Message:
    if cfg.secagg.enabled:  # the delta stays here, encoded in context.state; only public keys go back
        return secure_aggregation.advertise(msg, context, cfg, delta, metrics)
    return Message(RecordDict({"arrays": state_to_record(delta), "metrics": metrics}), reply_to=msg)


def _secagg_session(msg: Message, cfg: RunConfig) -> str:
    """The SecAgg+ session a train message opens (hex), "" without secure aggregation or without a setup."""
    if not cfg.secagg.enabled:
        return ""
    try:
        return secagg_wire.round_setup_from(msg.content)[0].hex()
    except (KeyError, ValueError):
        return ""  # advertise() refuses the message with the reason


def _committed(store: DeviceState, setup: RoundSetup, digest: str, session: str) -> RoundRecord | None:
    """The stored answer to this (run, round) if the device already committed one, else None.

    A re-delivered round is answered with the stored update (no training, no second charge), but only for the
    same global adapter and, with secure aggregation, the same SecAgg+ session. Another session for a round
    already answered is refused: the server would get the same delta inside two sums over possibly different
    survivors, and subtracting them could isolate it; the device sits that round out instead (a dropout).
    """
    record = store.load_round()
    if record is None or (record.run_id, record.server_round) != (setup.run_id, setup.server_round):
        return None
    where = f"round {setup.server_round} of run {setup.run_id!r} ({store.round_path})"
    if record.global_sha256 != digest:
        raise ValueError(f"{where} was answered for another global adapter (SHA-256 {record.global_sha256[:16]}..., "
                         f"now {digest[:16]}...); a device answers a round once and does not train in it again")
    if record.secagg_session != session:
        raise ValueError(f"{where} was answered in SecAgg+ session {record.secagg_session or 'none'}, this message "
                         f"opens session {session or 'none'}; sending the same update into a second session would let "
                         "the server subtract two sums, so this device sits the round out")
    return record


def _check_round_order(store: DeviceState, ledger: PrivacyLedger, setup: RoundSetup) -> None:
    """Refuse before training a round the ledger could not record (its rounds never go back)."""
    if ledger.entries and ledger.entries[-1].round > setup.server_round:
        raise ValueError(f"{store.ledger_path}: this device's record-level ledger already holds round "
                         f"{ledger.entries[-1].round}, and this message is round {setup.server_round} of run "
                         f"{setup.run_id!r}; ledger rounds never go back, so this state directory cannot take part "
                         "in an earlier round (or, yet, in a second run)")


@app.train()
def train(msg: Message, context: Context) -> Message:
    setup = _setup(msg, context)
    cfg, split, global_state, server_round = setup.cfg, setup.split, setup.global_state, setup.server_round
    audit = AuditInstructions.from_config(msg.content["config"])
    if split is None:  # an audit canary client: it "trains" by sending its random direction (zeros if excluded)
        t0 = time.perf_counter()
        delta = canary_client_update(global_state, seed=audit.direction_seed, norm=cfg.user_dp.clip_norm)
        values = {"train-seconds": time.perf_counter() - t0, "steps": 0, "peak-rss-mb": _peak_rss_mb(),
                  CANARY_METRIC: 1, **({"num-examples": cfg.train.examples_per_user}
                                       if cfg.run.aggregation_weights == "examples" else {})}
        return _reply(msg, context, cfg, delta, MetricRecord(values))
    deployed = is_deployed(context)
    cfg = device_budget(cfg, context) if cfg.record_dp.enabled else cfg
    subject = device_subject(context) if cfg.record_dp.enabled or deployed else ""
    store = device_state(context) if cfg.record_dp.enabled or deployed else None
    digest, session = (state_digest(global_state), _secagg_session(msg, cfg)) if deployed else ("", "")
    if deployed and store is not None:
        record = _committed(store, setup, digest, session)
        if record is not None:  # re-delivered after a crash: finish what the crash interrupted, resend
            return _finish(msg, context, setup, cfg, store, subject, record)
    model = build_model(cfg, setup.catalog)
    set_global_state(model, global_state)
    local_seed = int(np.random.SeedSequence([setup.seed, server_round, setup.local_key]).generate_state(1)[0])
    extra: dict[str, float] = {}
    ledger: PrivacyLedger | None = None
    if cfg.record_dp.enabled:
        # The state directory is the durable copy (it survives a restart); context.state mirrors it.
        ledger = store.load_ledger(subject=subject) if store else load_record_ledger(context, subject=subject)
        if deployed:
            _check_round_order(store, ledger, setup)
        try:
            stats = train_local_private(model, split, setup.catalog, cfg, seed=local_seed, ledger=ledger,
                                        server_round=server_round, canaries=audit.record_canaries)
        except PrivacyBudgetExceeded:
            # Declined, not failed: no arrays, and the ledger is not charged (nothing was trained or released).
            # record-epsilon travels unprotected (a plain metric, no DP, no masking), like every metric: it is
            # the device's cumulative epsilon so far, a function of the public settings (K fixed slots, q, z)
            # and of the rounds it trained in, which the server knows anyway.
            declined = MetricRecord({"declined": 1, "record-epsilon": record_epsilon(ledger, cfg)})
            return Message(RecordDict({"metrics": declined}), reply_to=msg)
        extra["record-epsilon"] = stats.epsilon  # unprotected metric, as above
    else:
        stats = train_local(model, split, setup.catalog, cfg, seed=local_seed, canaries=audit.record_canaries)
    local = {k: v.numpy() for k, v in trainable_state(model).items()}
    delta = subtract(local, global_state)
    if cfg.user_dp.enabled:
        # DP-FedAvg: bound this user's whole contribution before it leaves the device (the server adds the noise).
        delta, _ = clip_state(delta, clip_norm=cfg.user_dp.clip_norm)
    values: dict[str, float] = {"train-seconds": stats.seconds, "steps": stats.steps, "peak-rss-mb": _peak_rss_mb()}
    if not (cfg.record_dp.enabled or cfg.user_dp.enabled or cfg.secagg.enabled) or cfg.run.dp_diagnostics:
        # Data-dependent figures (history size, loss): not covered by any DP guarantee, so not sent under DP.
        values.update({"num-examples": stats.examples, "train-loss": stats.loss, "grad-tokens": stats.tokens})
    record = RoundRecord(run_id=setup.run_id, server_round=server_round, global_sha256=digest,
                         secagg_session=session, metrics={**values, **extra}, update=delta,
                         ledger=ledger.dumps() if deployed and ledger is not None else "")
    if deployed:
        store.save_round(record)  # the commit point: the charge and the update now survive any crash
    if ledger is not None:
        if store is not None:
            store.save_ledger(ledger)  # charged before the update leaves the device
        save_record_ledger(context, ledger)
    return _finish(msg, context, setup, cfg, store, subject, record, ledger=ledger)


def _finish(msg: Message, context: Context, setup: RoundSetup, cfg: RunConfig, store: DeviceState | None,
            subject: str, record: RoundRecord, ledger: PrivacyLedger | None = None) -> Message:
    """After the commit: report, offline copies, reply. Also what a re-delivered round reruns (idempotent)."""
    if cfg.record_dp.enabled and store is not None:
        if ledger is None:  # re-delivered: the ledger as committed (rolled forward if the crash came before)
            ledger = store.load_ledger(subject=subject)
            save_record_ledger(context, ledger)
        write_device_report(store, cfg, ledger, run_id=setup.run_id, device_id=subject)
    if is_deployed(context) and store is not None:  # offline recommendations (fedrec recommend --state-dir)
        store.save_config(cfg)
        store.save_adapter(setup.global_state, server_round=setup.server_round - 1)  # the global after round r-1
    elif store is not None and NODE_STATE_DIR in context.node_config:
        store.save_adapter(setup.global_state, server_round=setup.server_round - 1)
    return _reply(msg, context, cfg, record.update, MetricRecord(record.metrics))


# -- evaluate and query -------------------------------------------------------------------------------------------

@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    setup = _setup(msg, context)
    cfg, split = setup.cfg, setup.split
    if is_deployed(context):  # the newest global adapter (after round r): keep it for offline recommendations
        store = deployed_state(context)
        store.save_config(cfg)
        store.save_adapter(setup.global_state, server_round=setup.server_round)
    t0 = time.perf_counter()
    m = RankingMetrics(num_items=len(setup.catalog))
    if split is not None and split.evaluated:  # a canary client (split None) has nothing to evaluate
        model = build_model(cfg, setup.catalog)
        set_global_state(model, setup.global_state)
        prepare_for_scoring(model, setup.catalog, cfg)
        scores = score_users(model, [split], setup.catalog, cfg)[0]
        rng = np.random.default_rng([setup.seed, setup.server_round, setup.local_key])
        m.add_scores(scores, split.test_item, split.train_items, rng=rng)
    record = metrics_to_record(m, **{"eval-seconds": time.perf_counter() - t0, "peak-rss-mb": _peak_rss_mb()})
    return Message(RecordDict({"metrics": record}), reply_to=msg)


def _store_catalog(msg: Message, context: Context) -> Message:
    """A deployed run's catalog (`fedrec.shared.deployment`): check its hash, parse it, store it, reply the hash."""
    if not is_deployed(context):
        raise ValueError(f"catalog query: this node is not a deployed device (no node config {NODE_DATA_PATH!r}); "
                         "a simulated client reads the catalog from the run's data set")
    config = msg.content["config"]
    data, declared = bytes(config[QUERY_CATALOG]), str(config[CATALOG_SHA256])
    digest = catalog_sha256(data)
    if digest != declared:
        raise ValueError(f"catalog query: the catalog's SHA-256 is {digest}, the message says {declared}")
    catalog_from_bytes(data, where="catalog query")  # a malformed catalog is refused, never stored
    deployed_state(context).save_catalog(data)
    return Message(RecordDict({"config": ConfigRecord({CATALOG_SHA256: digest})}), reply_to=msg)


@app.query()
def query(msg: Message, context: Context) -> Message:
    """The handshakes at the start of a run, dispatched on what the query's config asks.

    `QUERY_CATALOG`: a deployed run's catalog (`fedrec.shared.deployment`).
    `QUERY_PARTITION`: this node's partition id, or -1 on a deployed device (`fedrec.shared.node_order`).
    `QUERY_CANARY_CLIENTS`: which of the run's audit canary clients this node is (its index), or -1 for a user.
    """
    config = msg.content["config"]
    if QUERY_CATALOG in config:
        return _store_catalog(msg, context)
    if QUERY_PARTITION in config:
        metrics = MetricRecord({PARTITION_METRIC: partition_of(context.node_config)})
        return Message(RecordDict({"metrics": metrics}), reply_to=msg)
    index = None if is_deployed(context) else canary_client_index(
        int(context.node_config["partition-id"]), int(context.node_config["num-partitions"]),
        int(config[QUERY_CANARY_CLIENTS]))  # a deployed device is always a user
    return Message(RecordDict({"metrics": MetricRecord({ROLE_METRIC: -1 if index is None else index})}), reply_to=msg)
