"""The anchor of the secure-aggregation benchmark: Flower's own (legacy) SecAgg+ on the same update size.

Flower 1.41's `SecAggPlusWorkflow` with `secaggplus_mod` on a `NumPyClient` (the only combination it works with,
docs/secure-aggregation.md), driven by `DefaultWorkflow` over the same serialising in-process Grid as fedrec's
rounds (`bench_secagg.WireGrid`), so both are measured alike: one process, every message through Flower's wire
format. The client returns the same kind of random update (norm 2S, clipped to S first, so Flower's own
per-coordinate clipping to [-8, 8] never bites). Its share count and threshold are set to fedrec's for the same
number of clients (k + 1 holders, t), so the two do the same amount of secret sharing.
"""

from __future__ import annotations

import logging
import statistics
import time
from typing import Any

import numpy as np
from flwr.app import Context, RecordDict
from flwr.client import NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.common import ndarrays_to_parameters
from flwr.server import LegacyContext, ServerConfig
from flwr.server.strategy import FedAvg
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow

from fedrec.shared.privacy.mechanisms import clip_update
from fedrec.shared.protocol import State
from fedrec.shared.secagg import graph


class _TimedFedAvg(FedAvg):
    """FedAvg that notes when each fit round starts (configure_fit) and ends (aggregate_fit)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.started: dict[int, float] = {}
        self.seconds: dict[int, float] = {}
        self.results: dict[int, int] = {}

    def configure_fit(self, server_round, parameters, client_manager):  # noqa: ANN001, ANN201 - Flower's API
        self.started[server_round] = time.perf_counter()
        return super().configure_fit(server_round, parameters, client_manager)

    def aggregate_fit(self, server_round, results, failures):  # noqa: ANN001, ANN201 - Flower's API
        out = super().aggregate_fit(server_round, results, failures)
        self.seconds[server_round] = time.perf_counter() - self.started[server_round]
        self.results[server_round] = len(results)
        return out


def _client_app(template: State, clip_norm: float) -> ClientApp:
    names = list(template)

    class _Client(NumPyClient):
        def __init__(self, node: int) -> None:
            rng = np.random.default_rng(node)
            raw = {k: rng.standard_normal(template[k].shape).astype(np.float32) for k in names}
            clipped, _ = clip_update(raw, clip_norm=clip_norm)
            self.update = [clipped[k] for k in names]

        def fit(self, parameters, config):  # noqa: ANN001, ANN201 - Flower's API
            return self.update, 1, {}

    def client_fn(context: Context) -> Any:
        return _Client(context.node_id).to_client()

    return ClientApp(client_fn=client_fn, mods=[secaggplus_mod])


def flower_rounds(template: State, clients: int, rounds: int, *, clip_norm: float = 1.0) -> dict[str, Any]:
    """Median seconds of `rounds` Flower SecAgg+ rounds of `clients` clients (after one warm-up round), and the
    median bytes per client each way over the whole run (every round, divided by the rounds)."""
    from fedrec.simulations.bench_secagg import WireGrid

    logging.getLogger("flwr").setLevel(logging.WARNING)
    degree = graph.effective_degree(clients, 0)
    threshold = graph.threshold(degree, 0.5)
    grid = WireGrid(_client_app(template, clip_norm), clients)
    strategy = _TimedFedAvg(fraction_fit=1.0, min_fit_clients=clients, min_available_clients=clients,
                            fraction_evaluate=0.0, min_evaluate_clients=0,
                            initial_parameters=ndarrays_to_parameters([np.zeros_like(v) for v in template.values()]))
    context = LegacyContext(context=Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={}),
                            config=ServerConfig(num_rounds=rounds + 1), strategy=strategy)
    workflow = DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(num_shares=degree + 1,
                                                               reconstruction_threshold=threshold))
    t0 = time.perf_counter()
    workflow(grid, context)
    counted = [strategy.seconds[r] for r in range(2, rounds + 2) if r in strategy.seconds]
    return {"round_s": statistics.median(counted) if counted else float("nan"), "rounds": len(counted),
            "completed": sum(strategy.results.get(r, 0) == clients for r in range(2, rounds + 2)),
            "up": statistics.median(grid.traffic.up.values()) / (rounds + 1),
            "down": statistics.median(grid.traffic.down.values()) / (rounds + 1),
            "shares": degree + 1, "threshold": threshold, "total_s": time.perf_counter() - t0}
