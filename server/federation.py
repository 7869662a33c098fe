"""One federated run: set up once, then a short loop of rounds, then the run's closing outputs.

    fed = Federation.start(grid, cfg, resume)          # population, run dir, model, nodes, privacy layers
    run_release_phase(grid, fed)                        # server.releases: round 0, the statistics (once)
    for each remaining round:
        stop if the next release would exceed the user-level budget (a normal end: final evaluation, then finish)
        outcome = run_round(grid, fed, r, fed.adapter_task(r))  # server.round: sample, send, collect, release
        evaluate every eval.every rounds                # server.evaluation
        fed.commit(outcome)                             # checkpoint first, then the public outputs
    fed.finish()                                        # empirical audit, signed privacy report, finished marker

The layers are built once in `Federation.start` from the settings and used through one entry point each (see
`server.round`): the sampler (`server.sampling`), the collector (plain here, `server.secure_aggregation` under
secure aggregation), the release (`server.release`: plain mean or DP-FedAvg), the empirical audit
(`server.empirical_audit`). Nothing in the loop branches on a privacy flag.

The loop talks to Flower's `Grid` directly rather than through a stock strategy because the privacy layers need
control over who is asked (a sample the accountant can rely on), what is sent (clipped deltas, masked uploads)
and what counts as a release (a round with no update releases nothing). Order within a round: checkpoint, then
publish (`server.checkpoint`), so a resumed run never releases a round twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from fedrec.server.calibration import resolve_noise
from fedrec.server.checkpoint import (
    Checkpoint,
    CheckpointError,
    load_checkpoint,
    mark_finished,
    note_resumed,
    publish,
    resumable_config,
    save_checkpoint,
    state_path,
)
from fedrec.server.deployment import message_config, server_population, start_deployment
from fedrec.server.distributed_release import user_level_release
from fedrec.server.empirical_audit import ServerAudit, user_level_epsilon
from fedrec.server.evaluation import evaluate
from fedrec.server.node_order import NodeOrder, order_nodes
from fedrec.server.privacy_report import write_run_report
from fedrec.server.release import DpFedAvgRelease, Release, ServerOptimizer
from fedrec.server.releases import declared_releases, release_kinds, run_release_phase
from fedrec.server.round import PlainCollector, RoundOutcome, RoundTask, run_round
from fedrec.server.run_outputs import close_run, epsilon_so_far
from fedrec.server.sampling import Sampler, check_user_level_sampling
from fedrec.server.secure_aggregation import SecureCollector
from fedrec.shared.config import RunConfig
from fedrec.shared.data.types import Catalog
from fedrec.shared.model.build import build_model, initial_state
from fedrec.shared.model.recommender import Recommender
from fedrec.shared.protocol import (
    DEVICE_STATE_ROOT,
    RELEASED,
    RUN_ID,
    SEED,
    SERVER_ROUND,
    State,
    peak_rss_mb,
    state_bytes,
    state_size,
    state_to_record,
)
from fedrec.shared.run_dir import clients_dir, new_run_dir, write_catalog, write_config

log = logging.getLogger("fedrec.server")

Event = Callable[[str, dict[str, Any]], None]  # (kind, payload): "start", "round", "done"


class AllRoundsFailed(RuntimeError):
    """No round produced an update: the run must not look successful (Flower itself would exit 0)."""


def wait_for_nodes(grid: Grid, expected: int, timeout: float = 120.0) -> list[int]:
    """Node ids once `expected` nodes are connected; fails loudly (with the count) after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= expected:
            return nodes
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"only {len(nodes)} of {expected} clients connected within {timeout:.0f} s; a simulation needs one "
                f"SuperNode per user (flwr run . --federation-config \"num-supernodes={expected}\")"
            )
        time.sleep(0.5)


def messages(kind: str, nodes: list[int], state: State, cfg: RunConfig, server_round: int, run: Path,
             per_node: dict[int, dict[str, str]] | None = None, *, released: State | None = None,
             extra: dict[str, Any] | None = None) -> list[Message]:
    """One message per node: `state` (the global adapter, or a release's public item list), the settings a device
    needs and the round's keys.

    `released`: the released statistics a device scores with (evaluate messages); `extra`: more config (a release's
    public parameters); `per_node`: extra config for some nodes, e.g. a node's audit instructions
    (server.empirical_audit).
    """
    content = {"arrays": state_to_record(state)}
    if released:
        content[RELEASED] = state_to_record(released)
    # run-id names the run in device reports; device-state-root is only a proposal (a device's own state-dir wins)
    # simulated devices' state (ledgers, keys, reports: who trained when) is private under a privacy setting
    root = Path(cfg.run.device_state_dir) if cfg.run.device_state_dir else clients_dir(run, cfg) / "devices"
    config = {**cfg.client_view(), SERVER_ROUND: server_round, SEED: cfg.run.seed, RUN_ID: run.name,
              DEVICE_STATE_ROOT: str(root.resolve()), **message_config(cfg)}  # deployed run: + the catalog's hash
    config.update(extra or {})
    return [Message(RecordDict({**content, "config": ConfigRecord({**config, **(per_node or {}).get(n, {})})}),
                    dst_node_id=n, message_type=kind) for n in nodes]


@dataclass
class Federation:
    """One run: its settings and layers (fixed at the start) and its state (what a checkpoint saves)."""

    cfg: RunConfig
    run: Path
    catalog: Catalog
    model: Recommender
    order: NodeOrder
    users: list[int]  # the nodes that are users' devices (the audit's canary clients excluded)
    sampler: Sampler
    release: Release
    audit: ServerAudit | None
    optimizer: ServerOptimizer
    # state
    global_state: State
    initial_state: State
    released: State = field(default_factory=dict)  # the statistics released so far (public, server.releases)
    release_rows: list[dict[str, Any]] = field(default_factory=list)
    done: int = 0  # rounds completed
    succeeded: int = 0  # rounds that released an update
    adapter_round: int = 0  # round of the last released adapter (0: none yet)
    rounds: list[dict[str, Any]] = field(default_factory=list)
    client_rows: list[dict[str, Any]] = field(default_factory=list)
    record_epsilons: dict[int, float] = field(default_factory=dict)  # node -> latest record-level epsilon reported
    log: logging.Logger = log

    @property
    def nodes(self) -> list[int]:
        return self.order.nodes

    @property
    def user_dp(self) -> DpFedAvgRelease | None:
        return self.release if isinstance(self.release, DpFedAvgRelease) else None

    # -- start ----------------------------------------------------------------------------------------------

    @classmethod
    def start(cls, grid: Grid, cfg: RunConfig, resume: Path | None = None) -> Federation:
        """Set up a new run (or continue `resume` from its checkpoint): everything before round 1."""
        saved: Checkpoint | None = None
        if resume is None:
            pop = server_population(cfg)  # simulation: the data set's users; deployment: N devices
            check_user_level_sampling(cfg, pop.users + cfg.audit.canary_clients)  # a ConfigError before anything
            # target epsilons -> noise multipliers, before anything runs (the population includes canary clients)
            cfg = resolve_noise(cfg, pop.users + cfg.audit.canary_clients)
            run = new_run_dir(cfg)
            write_config(run, cfg, population=pop.users, catalog_size=len(pop.catalog),
                         load_summary=pop.summary.lines())
            write_catalog(run, pop.catalog)
        else:  # the same directory and settings, the state of the last checkpointed round
            run = Path(resume)
            cfg = resumable_config(run, given=cfg)
            saved = load_checkpoint(run)
            pop = server_population(cfg)
        model = build_model(cfg, pop.catalog)  # also writes the catalog table cache the clients will read
        start_state = initial_state(model)  # seeded, not the cached model's current weights
        nodes = wait_for_nodes(grid, pop.users + cfg.audit.canary_clients)
        nodes = start_deployment(grid, cfg, nodes, pop.catalog)  # deployed run: N nodes, each sent the catalog
        # Stable identity before any sampling: simulated nodes get random ids in every run, so order them by the
        # partition (user) they hold (server.node_order); a deployment keeps node-id order.
        order = NodeOrder(sorted(nodes)) if cfg.run.deployment_nodes else order_nodes(grid, nodes)
        audit = ServerAudit.start(grid, cfg, run, nodes=order.nodes, users=pop.users, catalog=pop.catalog,
                                  seed=saved.audit_seed if saved is not None else None, partitions=order.partitions)
        population = len(order.nodes)
        sampler = Sampler(cfg, population, secret=cfg.user_dp.enabled)
        if note := cfg.run.cohort_note(population):
            log.warning("%s", note)  # a clamped cohort is said, never silent
        if warning := cfg.secagg_warning:
            log.warning("%s", warning)  # secure aggregation turned off where it is on by default
        release = user_level_release(cfg, population, sampler, adapter_dim=state_size(start_state))
        fed = cls(cfg=cfg, run=run, catalog=pop.catalog, model=model, order=order,
                  users=audit.real_nodes if audit is not None else order.nodes, sampler=sampler, release=release,
                  audit=audit, optimizer=ServerOptimizer(cfg.run.server_optimizer, cfg.run.server_learning_rate,
                                                         cfg.run.server_momentum),
                  global_state=start_state, initial_state={k: v.copy() for k, v in start_state.items()})
        if saved is None:
            save_checkpoint(run, fed.checkpoint())  # round 0: the secret generators' and the audit's starting state
        else:
            fed._restore(saved)
        return fed

    def _restore(self, saved: Checkpoint) -> None:
        where = str(state_path(self.run))
        identity = "partition" if self.order.by_partition else "node-id"
        if saved.identity != identity or (saved.user_dp is None) != (self.user_dp is None):
            raise CheckpointError(f"{where}: does not match this federation (nodes by {saved.identity}, here by "
                                  f"{identity}; user-level DP state {'present' if saved.user_dp else 'absent'})")
        self.done, self.adapter_round, self.succeeded = saved.round, saved.adapter_round, saved.succeeded
        self.rounds, self.client_rows, self.global_state = saved.rounds, saved.client_rows, saved.global_state
        self.released, self.release_rows = dict(saved.released), list(saved.release_rows)
        self.optimizer.restore(saved.optimizer)
        if saved.initial_state is not None:
            self.initial_state = saved.initial_state
        self.record_epsilons = {self.order.node(k): e for k, e in saved.record_epsilons.items()}
        if self.user_dp is not None:
            state = saved.user_dp or {}
            self.user_dp.restore(state, where=where)
            self.sampler.restore(state["sampler"], where=where)
        if self.audit is not None:
            self.audit.seconds += saved.audit_seconds
            self.audit.released = saved.audit_released
        # re-derive the public outputs from the checkpoint: the killed server may have died before writing them
        self.publish(adapter=(self.global_state, self.adapter_round) if self.adapter_round else None)
        note_resumed(self.run, from_round=self.done)

    # -- what every round uses ------------------------------------------------------------------------------

    def messages(self, kind: str, nodes: list[int], server_round: int, *, payload: State | None = None,
                 extra: dict[str, Any] | None = None,
                 per_node: dict[int, dict[str, str]] | None = None) -> list[Message]:
        """This round's messages to `nodes` (see `messages`): the global adapter unless `payload` is given, and the
        released statistics with every evaluate message."""
        return messages(kind, nodes, self.global_state if payload is None else payload, self.cfg, server_round,
                        self.run, per_node=per_node, extra=extra,
                        released=self.released if kind == MessageType.EVALUATE else None)

    def adapter_task(self, server_round: int) -> RoundTask:
        """An adapter round: the sampled devices train on the current global adapter (server.round)."""
        sampled = self.sampler.sample(self.nodes, server_round)
        return RoundTask(phase="train", nodes=sampled, template=self.global_state, payload=self.global_state,
                         release=self.release,
                         clip_norm=self.cfg.user_dp.clip_norm if self.cfg.user_dp.enabled else None,
                         weighted=self.cfg.run.aggregation_weights == "examples",
                         per_node=self.audit.train_config(sampled) if self.audit is not None else None)

    def collector(self, task: RoundTask, server_round: int) -> PlainCollector | SecureCollector:
        """How this round's contributions reach the server: in the clear, or only as a secure sum."""
        if self.cfg.secagg.enabled:  # distributed DP: the release says how the clients add their noise shares
            encoding = task.release.encoding_for(state_size(task.template), task.clip_norm, len(task.nodes))
            return SecureCollector(self.cfg, server_round, task.nodes, clip_norm=task.clip_norm, encoding=encoding)
        return PlainCollector(task)

    def would_exceed_budget(self) -> bool:
        return self.user_dp is not None and self.user_dp.would_exceed_budget()

    def evaluate_now(self, server_round: int) -> bool:
        return server_round % self.cfg.eval.every == 0 or server_round == self.cfg.run.rounds

    # -- after a round --------------------------------------------------------------------------------------

    def apply(self, outcome: RoundOutcome, server_round: int) -> None:
        """The round's released update moves the global adapter (nothing else is applied, ever)."""
        if outcome.update is not None:
            self.global_state = self.optimizer.step(self.global_state, outcome.update)
            self.succeeded += 1
            self.adapter_round = server_round
            if self.audit is not None:  # canary clients are scored on every release (server.empirical_audit)
                self.audit.observe(outcome.update)
        self.record_epsilons.update(outcome.record_epsilons)

    def apply_release(self, outcome: RoundOutcome, released: State) -> None:
        """A release's public tensors join the released statistics (server.releases)."""
        self.released.update(released)
        self.record_epsilons.update(outcome.record_epsilons)

    def commit(self, outcome: RoundOutcome, server_round: int, t0: float, *, release: bool = False) -> None:
        """The round's rows, then the checkpoint, then the public outputs (never the other way round)."""
        outcome.row["wall_seconds"] = round(time.perf_counter() - t0, 3)
        outcome.row["server_peak_rss_mb"] = round(peak_rss_mb(), 1)
        (self.release_rows if release else self.rounds).append(outcome.row)
        self.client_rows.extend(self.order.annotate(r) for r in outcome.client_rows)
        if not release:
            self.done = server_round
        # Checkpoint BEFORE the round's public outputs (server.checkpoint): a kill between the two re-publishes
        # this round on resume; the other order would release it twice with fresh noise and count it once.
        save_checkpoint(self.run, self.checkpoint())
        self.publish(adapter=(self.global_state, server_round) if outcome.update is not None else None)

    def stop(self, grid: Grid, server_round: int, why: str) -> dict[str, Any]:
        """A normal end before the last round (the budget): the current adapter gets the run's final evaluation,
        then the stop is recorded as a row and published. Nothing is trained or released."""
        t0 = time.perf_counter()
        row: dict[str, Any] = {"round": server_round, "status": f"stopped: {why}", "sampled": 0, "updates": 0,
                               "train_loss": float("nan")}
        rows: list[dict[str, Any]] = []
        row.update(evaluate(grid, self, server_round, rows, final=True))
        self.client_rows.extend(self.order.annotate(r) for r in rows)
        row["wall_seconds"] = round(time.perf_counter() - t0, 3)
        self.rounds.append(row)
        self.publish(adapter=None)
        return row

    def checkpoint(self) -> Checkpoint:
        """Everything the rest of the run depends on (server.checkpoint)."""
        user_dp = ({**self.user_dp.secret_state(), "sampler": self.sampler.secret_state()}
                   if self.user_dp is not None else None)
        return Checkpoint(round=self.done, global_state=self.global_state, adapter_round=self.adapter_round,
                          succeeded=self.succeeded, rounds=self.rounds, client_rows=self.client_rows,
                          record_epsilons={self.order.key(n): e for n, e in self.record_epsilons.items()},
                          identity="partition" if self.order.by_partition else "node-id", user_dp=user_dp,
                          audit_seed=self.audit.secret_seed if self.audit is not None else None,
                          audit_seconds=self.audit.seconds if self.audit is not None else 0.0,
                          initial_state=self.initial_state if self.audit is not None else None,
                          released=self.released, release_rows=self.release_rows,
                          optimizer=self.optimizer.state(),
                          audit_released=self.audit.released if self.audit is not None else None)

    def publish(self, *, adapter: tuple[State, int] | None) -> None:
        publish(self.run, self.user_dp.ledger if self.user_dp is not None else None, self.rounds, self.client_rows,
                adapter=adapter, released=self.released, release_rows=self.release_rows,
                clients=clients_dir(self.run, self.cfg))

    # -- end ------------------------------------------------------------------------------------------------

    def finish(self) -> None:
        """Empirical audit (scored with the final adapter only), the signed privacy report, the finished marker."""
        empirical = None
        dp = self.user_dp
        if self.audit is not None:
            empirical = self.audit.finish(self.model, self.catalog, initial=self.initial_state,
                                          final=self.global_state, record_epsilons=self.record_epsilons,
                                          user_epsilon=user_level_epsilon(dp), user_delta=dp.delta if dp else None,
                                          population=len(self.nodes))
        if self.cfg.user_dp.enabled or self.cfg.record_dp.enabled:
            rounds = self.rounds
            write_run_report(self.run, self.cfg, dp, empirical_audit=empirical,
                             rounds_run=len([r for r in rounds if not str(r["status"]).startswith("stopped")]),
                             record_epsilons=list(self.record_epsilons.values()),
                             rounds_without_release=tuple(r["round"] for r in rounds
                                                          if str(r.get("status", "")).startswith("aborted")),
                             secure_rounds=[r for r in [*self.release_rows, *rounds] if "secagg_ring_bits" in r],
                             releases=tuple(declared_releases(self.cfg, len(self.catalog))))
        mark_finished(self.run, rounds=self.done)  # deletes the checkpoint's secrets: a finished run cannot resume


def run_federation(grid: Grid, cfg: RunConfig, on_event: Event | None = None, *,
                   resume: Path | None = None) -> Path:
    """Run `cfg.run.rounds` rounds; returns the run directory. Raises AllRoundsFailed if none released.

    `resume`: continue that run directory from its checkpoint (`server.checkpoint`); `cfg` must be its settings.
    """
    emit = on_event or (lambda kind, payload: None)
    fed = Federation.start(grid, cfg, resume)
    emit("start", {"run_dir": str(fed.run), "clients": len(fed.nodes), "catalog": len(fed.catalog),
                   "adapter_params": int(sum(v.size for v in fed.global_state.values())),
                   "adapter_bytes": state_bytes(fed.global_state),
                   "resumed_after_round": fed.done if resume is not None else None})
    if fed.done == 0 and release_kinds(fed.cfg):
        run_release_phase(grid, fed, emit)
    for server_round in range(fed.done + 1, fed.cfg.run.rounds + 1):
        if fed.would_exceed_budget():
            log.warning("round %d: stopping, the next release would exceed user_dp.epsilon_max %.3g",
                        server_round, fed.cfg.user_dp.epsilon_max)
            emit("round", fed.stop(grid, server_round, "user-level budget"))
            break
        t0 = time.perf_counter()
        outcome = run_round(grid, fed, server_round, fed.adapter_task(server_round))
        fed.apply(outcome, server_round)
        if fed.evaluate_now(server_round):
            outcome.row.update(evaluate(grid, fed, server_round, outcome.client_rows))
        fed.commit(outcome, server_round, t0)
        emit("round", {**outcome.row, **epsilon_so_far(fed)})  # progress only, not in the published rows
    fed.finish()
    close_run(fed)  # summary.json (a failed run says so) and the export in <run>/model (server.run_outputs)
    if fed.succeeded == 0 and not (fed.released and fed.cfg.run.rounds == 0):
        raise AllRoundsFailed(f"all {fed.cfg.run.rounds} rounds failed; see "
                              f"{clients_dir(fed.run, fed.cfg) / 'clients.csv'}")
    emit("done", {"run_dir": str(fed.run), "rounds": fed.rounds})
    return fed.run
