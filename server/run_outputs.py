"""What a run shows while it runs and leaves when it ends.

While it runs: `epsilon_so_far`, the privacy spent after each round for progress displays.
When it ends, successful or not: `summary.json` (`fedrec.shared.run_summary`) and, when some round released an
adapter, the export in `<run>/model/` (a standard PEFT adapter directory with the other tensors, the catalog and
a model card: `fedrec.shared.model.export`). Both are written after the signed report, whose privacy statement
the model card copies.
"""

from __future__ import annotations

import copy
from collections import Counter
from typing import TYPE_CHECKING

import dp_accounting

from fedrec.shared.model.build import set_global_state
from fedrec.shared.model.export import export_trained
from fedrec.shared.model.scoring import prepare_for_scoring
from fedrec.shared.privacy.accountants import make_accountant
from fedrec.shared.run_summary import build_summary, write_summary

if TYPE_CHECKING:
    from fedrec.server.federation import Federation

EXPORT_DIR = "model"


def epsilon_so_far(fed: Federation) -> dict[str, float]:
    """`epsilon_user_rdp`: the user-level epsilon of the releases so far, by RDP (about 0.3 s whatever the number
    of rounds; the signed report's PLD figure, about 2-3 s to compute at 40 rounds, is tighter);
    `epsilon_record_max`: the largest cumulative record-level epsilon a device reported. Empty without DP."""
    out: dict[str, float] = {}
    dp = fed.user_dp
    if dp is not None and len(dp.ledger):
        same = Counter(dp.ledger.events())  # identical releases compose as one self-composed event
        events = [dp_accounting.SelfComposedDpEvent(e, n) for e, n in same.items()]
        out["epsilon_user_rdp"] = make_accountant(dp.quick_accountant, adjacency=dp.ledger.adjacency).epsilon(
            events, delta=dp.delta)
    if fed.record_epsilons:
        out["epsilon_record_max"] = max(fed.record_epsilons.values())
    return out


def close_run(fed: Federation) -> dict:
    """Export the final model (if any round released one, or the run released statistics), then write and return
    the run's summary."""
    export = None
    if fed.succeeded or fed.released:  # an adapter round released an update, or the statistics were released
        # a copy of its own: the process's cached model (build_model) is shared with in-process clients and
        # callers that expect its initial weights (a copy, not a rebuild: nothing is loaded twice)
        model = copy.deepcopy(fed.model)
        set_global_state(model, fed.global_state)
        prepare_for_scoring(model, fed.catalog, fed.cfg)
        export = export_trained(fed.run / EXPORT_DIR, model=model, cfg=fed.cfg, catalog=fed.catalog,
                                state=fed.global_state, run=fed.run, released=fed.released)
    doc = build_summary(fed.run, planned=fed.cfg.run.rounds, released=fed.succeeded, export=export)
    write_summary(fed.run, doc)
    return doc
