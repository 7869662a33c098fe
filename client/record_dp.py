"""Record-level DP on this device: its lifetime ledger, its budget, and a private round or a polite decline.

The ledger's durable copy is the device's state directory (`device_state`): one ledger for the device's whole
life, across runs, each entry keyed by (run id, round, release). `context.state` mirrors it, so a simulated device
without a state directory still keeps its epsilon across the rounds of a run. The budget (`record_dp.epsilon_max`,
lowered by the device's own `record-epsilon-max`) caps the lifetime total: a round that would exceed it is
declined before anything is trained: no arrays, the ledger is not charged, and the server counts a decline (a
dropout, not a failure). So a device whose earlier runs spent its budget declines the rounds of the next run.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict

from fedrec.client.device_state import DeviceState
from fedrec.client.privacy_report import write_device_report
from fedrec.client.setup import RoundSetup, device_budget, device_state, device_subject
from fedrec.shared.config import RunConfig
from fedrec.shared.errors import DeviceError
from fedrec.shared.hybrid.statistics import KINDS, StatisticSpec
from fedrec.shared.model.recommender import Recommender
from fedrec.shared.privacy import PrivacyBudgetExceeded, PrivacyLedger
from fedrec.shared.privacy.canaries import RecordCanary
from fedrec.shared.privacy.errors import LedgerError
from fedrec.shared.protocol import DECLINED_METRIC, RECORD_EPSILON_METRIC
from fedrec.shared.train.dp_sgd import DpTrainStats, new_record_ledger, record_epsilon, train_local_private

log = logging.getLogger("fedrec.client")


# context.state["privacy"]["record-ledger"]: the device's record-level ledger (JSON). It must outlive every round
# of the run, or the device's epsilon would silently restart from 0.
PRIVACY_STATE = "privacy"


RECORD_LEDGER_KEY = "record-ledger"


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


def check_round_order(where: str, ledger: PrivacyLedger, setup: RoundSetup) -> None:
    """Refuse before training a round the lifetime ledger could not record: one it already charged, an earlier
    round of the current run, or a round of a run that a later run has followed."""
    try:
        ledger.check_next(run=setup.run_id, round=setup.server_round)
    except LedgerError as e:
        raise DeviceError("state", f"{where}: round {setup.server_round} of run {setup.run_id!r} cannot be charged "
                                   f"to this device's lifetime ledger, so it is not trained: {e}") from None


def private_round(msg: Message, context: Context, setup: RoundSetup, cfg: RunConfig, model: Recommender,
                  store: DeviceState | None, *, subject: str, seed: int,
                  canaries: Sequence[RecordCanary]) -> tuple[DpTrainStats, PrivacyLedger] | Message:
    """One round of DP-SGD charged to the device's ledger, or the decline message when it would exceed the budget.

    The ledger is returned charged but not yet saved: the caller commits it with the round (`client.train`).
    """
    # The state directory is the durable copy (it survives a restart); context.state mirrors it.
    ledger = store.load_ledger(subject=subject) if store else load_record_ledger(context, subject=subject)
    check_round_order(str(store.ledger_path) if store else "context.state", ledger, setup)
    try:
        stats = train_local_private(model, setup.split, setup.catalog, cfg, seed=seed, ledger=ledger,
                                    server_round=setup.server_round, run=setup.run_id, canaries=canaries)
    except PrivacyBudgetExceeded:
        return decline(msg, ledger, cfg)
    return stats, ledger


def decline(msg: Message, ledger: PrivacyLedger, cfg: RunConfig) -> Message:
    """Declined, not failed: no arrays, and the ledger is not charged (nothing was trained or released).

    RECORD_EPSILON_METRIC travels unprotected (a plain metric, no DP, no masking), like every metric: it is the
    device's cumulative epsilon so far, a function of the public settings (K fixed slots, q, z) and of the rounds
    it trained in, which the server knows anyway.
    """
    declined = MetricRecord({DECLINED_METRIC: 1, RECORD_EPSILON_METRIC: record_epsilon(ledger, cfg)})
    return Message(RecordDict({"metrics": declined}), reply_to=msg)


def charge_release(msg: Message, context: Context, setup: RoundSetup, spec: StatisticSpec,
                   noise_multiplier: float) -> PrivacyLedger | Message:
    """Charge this device's lifetime ledger for contributing to a release with its own noise, before anything is
    computed; returns the charged (and saved) ledger, or the decline message when the charge would exceed the
    budget (nothing charged, nothing sent).

    The release is one GaussianDpEvent(z): the device adds noise of std z x `spec.record_sensitivity` (one
    listening record's L2 effect on its contribution) in `client.statistics`. Its key is (run, round 0, the
    release's position in `KINDS`), so a release is charged once per run, whatever is re-delivered.
    """
    if not noise_multiplier > 0:
        raise DeviceError("config", f"release {spec.kind}: record-level DP needs a local noise multiplier > 0, the "
                                    f"message gives {noise_multiplier!r}")
    cfg = device_budget(setup.cfg, context)
    subject = device_subject(context)
    store = device_state(context)
    ledger = store.load_ledger(subject=subject) if store else load_record_ledger(context, subject=subject)
    where = str(store.ledger_path) if store else "context.state"
    try:
        ledger.check_next(run=setup.run_id, round=0, release=KINDS.index(spec.kind))
    except LedgerError as e:
        raise DeviceError("state", f"{where}: release {spec.kind} of run {setup.run_id!r} cannot be charged to "
                                   f"this device's lifetime ledger, so nothing is sent: {e}") from None
    trial = PrivacyLedger.loads(ledger.dumps(), where=where)
    trial.record_local_release(round=0, noise_multiplier=noise_multiplier, sensitivity=spec.record_sensitivity,
                               name=spec.kind, run=setup.run_id, release=KINDS.index(spec.kind))
    if cfg.record_dp.epsilon_max > 0 and record_epsilon(trial, cfg) > cfg.record_dp.epsilon_max:
        return decline(msg, ledger, cfg)
    if store is not None:
        store.save_ledger(trial)  # charged before the contribution leaves the device
        write_device_report(store, cfg, trial, run_id=setup.run_id, device_id=subject)
    save_record_ledger(context, trial)
    return trial
