"""The train job: train on this user's own history, reply with the adapter *delta* (clipped under user-level DP).

With record-level DP, training is DP-SGD (`client.record_dp`), the device's ledger is charged, its signed report
rewritten, and a round that would exceed its budget is declined. Under any privacy setting only the metrics listed
in `client.privacy_report.SENT_IN_THE_CLEAR` are sent (`sent_metrics`: no telemetry, no data-dependent figure).
With secure aggregation the delta stays on the device and only public keys go back (`client.secure_aggregation`).
A deployed device answers each (run, round) once: see `device_state` for the crash-safe round record and
`_committed` for when a re-delivered round is refused.
"""

from __future__ import annotations

import logging
import time

import numpy as np
from flwr.app import Context, Message, MetricRecord, RecordDict

from fedrec.client import secure_aggregation
from fedrec.client.device_state import DeviceState, RoundRecord, state_digest
from fedrec.client.node_config import NODE_STATE_DIR
from fedrec.client.privacy_report import write_device_report
from fedrec.client.record_dp import private_round, save_record_ledger
from fedrec.client.setup import RoundSetup, device_budget, device_state, device_subject, is_deployed, read_setup
from fedrec.shared.config import RunConfig
from fedrec.shared.errors import DeviceError
from fedrec.shared.model.build import build_model, set_global_state
from fedrec.shared.model.recommender import trainable_state
from fedrec.shared.privacy import PrivacyLedger
from fedrec.shared.privacy.canaries import AuditInstructions, canary_client_update
from fedrec.shared.privacy.mechanisms import clip_update
from fedrec.shared.protocol import CANARY_METRIC, RECORD_EPSILON_METRIC, State, peak_rss_mb, state_to_record, subtract
from fedrec.shared.secagg import wire as secagg_wire
from fedrec.shared.train.local import train_local

log = logging.getLogger("fedrec.client")


def sent_metrics(cfg: RunConfig, telemetry: dict[str, float], diagnostics: dict[str, float]) -> dict[str, float]:
    """The figures a train reply may carry besides the decline flag, the record-level epsilon and the canary flag.

    Without a privacy setting: both. Under one (`RunConfig.private`): neither, since the round's seconds, step
    count and peak memory are per-client telemetry (the step count reveals the history size unless DP-SGD fixes
    it) and the example count, loss and token count are functions of the user's data; the simulation-only
    `run.dp_diagnostics` sends them anyway, outside every guarantee (a deployed device turns it off).
    """
    if cfg.private and not cfg.run.dp_diagnostics:
        return {}
    return {**telemetry, **diagnostics}


def reply_with(msg: Message, context: Context, cfg: RunConfig, delta: State, metrics: MetricRecord) -> Message:
    """The train reply carrying `delta`: in the clear, or (secure aggregation) public keys only."""
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
        raise DeviceError("replayed", f"{where} was answered for another global adapter (SHA-256 "
                                      f"{record.global_sha256[:16]}..., now {digest[:16]}...); a device answers a "
                                      "round once and does not train in it again")
    if record.secagg_session != session:
        raise DeviceError("replayed", f"{where} was answered in SecAgg+ session {record.secagg_session or 'none'}, "
                                      f"this message opens session {session or 'none'}; sending the same update "
                                      "into a second session would let the server subtract two sums, so this "
                                      "device sits the round out")
    return record


def train(msg: Message, context: Context) -> Message:
    setup = read_setup(msg, context)
    cfg, split, global_state, server_round = setup.cfg, setup.split, setup.global_state, setup.server_round
    audit = AuditInstructions.from_config(msg.content["config"])
    if split is None:  # an audit canary client: it "trains" by sending its random direction (zeros if excluded)
        t0 = time.perf_counter()
        delta = canary_client_update(global_state, seed=audit.direction_seed, norm=cfg.user_dp.clip_norm)
        values = {CANARY_METRIC: 1, **sent_metrics(cfg, {"train-seconds": time.perf_counter() - t0, "steps": 0,
                                                         "peak-rss-mb": peak_rss_mb()}, {}),
                  **({"num-examples": cfg.train.examples_per_user} if cfg.run.aggregation_weights == "examples"
                     else {})}
        return reply_with(msg, context, cfg, delta, MetricRecord(values))
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
        private = private_round(msg, context, setup, cfg, model, store, subject=subject, seed=local_seed,
                                canaries=audit.record_canaries)
        if isinstance(private, Message):  # declined: the device's budget is spent
            return private
        stats, ledger = private
        extra[RECORD_EPSILON_METRIC] = stats.epsilon  # unprotected metric (client.record_dp.decline says why)
    else:
        stats = train_local(model, split, setup.catalog, cfg, seed=local_seed, canaries=audit.record_canaries)
    local = {k: v.numpy() for k, v in trainable_state(model).items()}
    delta = subtract(local, global_state)
    if cfg.user_dp.enabled:
        # DP-FedAvg: bound this user's whole contribution before it leaves the device (the server adds the noise).
        delta, _ = clip_update(delta, clip_norm=cfg.user_dp.clip_norm)
    values = sent_metrics(cfg, {"train-seconds": stats.seconds, "steps": stats.steps, "peak-rss-mb": peak_rss_mb()},
                          {"num-examples": stats.examples, "train-loss": stats.loss, "grad-tokens": stats.tokens})
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
    return reply_with(msg, context, cfg, record.update, MetricRecord(record.metrics))
