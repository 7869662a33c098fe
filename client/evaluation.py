"""The evaluate job: rank the whole catalog for this user's held-out item, locally; reply with metric sums only.

Without a privacy setting the reply carries this user's sums, its top-10 ids (for coverage) and the time taken, in
the clear. Under any privacy setting (`RunConfig.private`) nothing of that is sent: the device adds its sums
(`RankingMetrics.to_sums`: hit, NDCG, counts and one count per catalog item for coverage) into a SecAgg+ sum with
the other evaluated devices (`client.secure_aggregation.advertise_sums`), so the server learns only the total.
"""

from __future__ import annotations

import logging
import time

import numpy as np
from flwr.app import Context, Message, RecordDict

from fedrec.client import secure_aggregation
from fedrec.client.setup import deployed_state, is_deployed, read_setup
from fedrec.shared.metrics import RankingMetrics
from fedrec.shared.model.build import build_model, set_global_state
from fedrec.shared.model.scoring import score_histories
from fedrec.shared.protocol import metrics_to_record, peak_rss_mb

log = logging.getLogger("fedrec.client")


def evaluate(msg: Message, context: Context) -> Message:
    setup = read_setup(msg, context)
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
        scores = score_histories(model, cfg, setup.catalog, [split], setup.released)[0]
        rng = np.random.default_rng([setup.seed, setup.server_round, setup.local_key])
        m.add_scores(scores, split.test_item, split.train_items, rng=rng)
    if cfg.private:  # only inside a secure sum: no per-user figure, no top-10 list, no timing leaves the device
        return secure_aggregation.advertise_sums(msg, context, m.to_sums(), bound=m.sums_bound())
    record = metrics_to_record(m, **{"eval-seconds": time.perf_counter() - t0, "peak-rss-mb": peak_rss_mb()})
    return Message(RecordDict({"metrics": record}), reply_to=msg)
