"""The release job: this device's contribution to one statistic of the release phase (`server.releases`).

The message names the statistic (`fedrec.shared.hybrid.statistics.StatisticSpec`: its kind, k, and the public
item list it is indexed by); the device computes its vector from its own training items and listen counts (and,
for the cross statistic, the public text table), clips it to the release's sensitivity, and replies with it:
in the clear, or with secure aggregation only as public keys (the vector stays here until it is masked, as an
adapter delta does). An audit canary client, which has no data, contributes zeros.

Under DP the reply carries no data-dependent metric. With record-level DP the device first charges its own
ledger with what the release costs one of its example slots (`client.record_dp.charge_release`), and declines
if that would exceed its budget.
"""

from __future__ import annotations

import secrets
import time

import numpy as np
from flwr.app import Context, Message, MetricRecord

from fedrec.client.record_dp import charge_release
from fedrec.client.setup import RoundSetup, device_budget, read_setup
from fedrec.client.train import reply_with, sent_metrics
from fedrec.shared.hybrid.statistics import RECORD_NOISE_KEY, StatisticSpec, one_per_slot
from fedrec.shared.hybrid.text import TextFeatures, text_features
from fedrec.shared.model.build import build_model
from fedrec.shared.protocol import RECORD_EPSILON_METRIC, peak_rss_mb
from fedrec.shared.train.dp_sgd import record_epsilon
from fedrec.shared.train.examples import bucket_of


def _text(setup: RoundSetup) -> TextFeatures:
    """The public text features of the catalog (the table is built once per process with the model)."""
    table = build_model(setup.cfg, setup.catalog).catalog.detach().cpu().numpy()
    return text_features(table)


def add_local_noise(contribution: dict[str, np.ndarray], sigma: float) -> dict[str, np.ndarray]:
    """contribution + N(0, sigma^2 I), from the operating system's randomness (a seed the server never sees)."""
    rng = np.random.default_rng(secrets.randbits(128))
    return {k: np.asarray(v, dtype=np.float64) + rng.normal(0.0, sigma, size=np.shape(v))
            for k, v in contribution.items()}


def contribute(msg: Message, context: Context) -> Message:
    """Reply to a release message with this device's clipped contribution (or a decline)."""
    t0 = time.perf_counter()
    setup = read_setup(msg, context)
    spec = StatisticSpec.from_message(setup.extra, setup.global_state)
    extra: dict[str, float] = {}
    local_z = float(setup.extra.get(RECORD_NOISE_KEY, 0.0))
    if setup.split is None:  # an audit canary client: no history, nothing to add
        contribution = spec.template()
    else:
        ledger = None
        # record-level DP alone: the device's own noise is the only protection, so it must charge and add it (a
        # missing or zero multiplier is refused in charge_release, never sent exact); with user_dp the server's
        # noise on the secure sum covers the release at user level
        if setup.cfg.record_dp.enabled and not setup.cfg.user_dp.enabled:
            charged = charge_release(msg, context, setup, spec, local_z)
            if isinstance(charged, Message):  # declined: the device's budget is spent
                return charged
            ledger = charged
        text = _text(setup) if spec.kind == "cross" else None
        items, counts = setup.split.train_items, setup.split.train_weights
        if ledger is not None:  # the ledger's unit is a slot: one item per slot (record_sensitivity relies on it)
            buckets = setup.cfg.train.examples_per_user
            slots = np.array([bucket_of(setup.catalog.item_ids[int(i)], buckets) for i in items], dtype=np.int64)
            items, counts = one_per_slot(items, counts, slots)
        contribution = spec.contribution(items, counts, text)
        if ledger is not None:  # record-level DP alone: this device's own noise, as charged
            contribution = add_local_noise(contribution, local_z * spec.record_sensitivity)
            extra[RECORD_EPSILON_METRIC] = record_epsilon(ledger, device_budget(setup.cfg, context))
    metrics = MetricRecord({**sent_metrics(setup.cfg, {"train-seconds": time.perf_counter() - t0, "steps": 0,
                                                       "peak-rss-mb": peak_rss_mb()}, {}), **extra})
    contribution = {k: np.asarray(v, dtype=np.float32) for k, v in contribution.items()}
    return reply_with(msg, context, setup.cfg, contribution, metrics)
