"""One federated run, round by round, driven through Flower's `Grid` (Message API).

Per round: sample clients, send them the global adapter, collect adapter deltas, average them, update the
global adapter, evaluate every `evaluate-every` rounds (federated: each client ranks the catalog for its own
held-out item and returns metric sums), checkpoint the run (`server.checkpoint`: secret generator states, ledger,
adapter), and only then write the round's public outputs to the run directory, so a resumed run never releases a
round twice. Nodes are ordered by the partition they hold before any sampling (`server.node_order`).

The loop talks to the Grid directly rather than through a stock strategy because the privacy layers that come
next (client sampling the accountant can rely on, clipped deltas, noise on the sum, secure-aggregation stages)
need control over who is asked, what is sent and what counts as a release.
"""

from __future__ import annotations

import logging
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from fedrec.server.aggregate import apply_update, weighted_mean
from fedrec.server.audit import ServerAudit, user_level_epsilon
from fedrec.server.central_dp import UserLevelDP
from fedrec.server.checkpoint import (
    Checkpoint,
    CheckpointError,
    load_checkpoint,
    mark_finished,
    note_resumed,
    resumable_config,
    save_checkpoint,
    state_path,
)
from fedrec.server.deployment import message_config, server_population, start_deployment
from fedrec.server.node_order import NodeOrder, order_nodes
from fedrec.server.privacy_report import write_run_report
from fedrec.server.secure_aggregation import SecureRound
from fedrec.shared.config import RunConfig
from fedrec.shared.dp_fedavg import clip_state
from fedrec.shared.metrics import RankingMetrics
from fedrec.shared.noise import resolve_noise
from fedrec.shared.run_dir import new_run_dir, write_adapter, write_catalog, write_config, write_rows
from fedrec.shared.training import build_model
from fedrec.shared.training import initial_state as seeded_adapter
from fedrec.shared.wire import State, check_delta, record_to_metrics, record_to_state, state_bytes, state_to_record

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


def _messages(grid: Grid, nodes: list[int], kind: str, state: State, cfg: RunConfig, server_round: int,
              run: Path, per_node: dict[int, dict[str, str]] | None = None):
    content = {"arrays": state_to_record(state)}
    # run-id names the run in device reports; device-state-root is only a proposal (a device's own state-dir wins)
    state_root = str(Path(cfg.run.device_state_dir).resolve() if cfg.run.device_state_dir
                     else (run / "devices").resolve())
    config = {**cfg.client_view(), "server-round": server_round, "seed": cfg.run.seed, "run-id": run.name,
              "device-state-root": state_root, **message_config(cfg)}  # deployed run: + the catalog's hash
    return [
        Message(RecordDict({**content, "config": ConfigRecord({**config, **(per_node or {}).get(n, {})})}),
                dst_node_id=n, message_type=kind)  # per_node: e.g. a node's audit canaries (server.audit)
        for n in nodes
    ]


def _sample(nodes: list[int], k: int, rng: np.random.Generator) -> list[int]:
    """k distinct node ids. Indices are drawn, not ids: ids are 64-bit unsigned and numpy would round them."""
    return sorted(nodes[int(i)] for i in rng.choice(len(nodes), size=k, replace=False))


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_federation(grid: Grid, cfg: RunConfig, on_event: Event | None = None, *,
                   resume: Path | None = None) -> Path:
    """Run `cfg.run.rounds` rounds; returns the run directory. Raises AllRoundsFailed if none succeeded.

    `resume`: continue that run directory from its checkpoint (`server.checkpoint`); `cfg` must be its settings.
    """
    emit = on_event or (lambda kind, payload: None)
    saved: Checkpoint | None = None
    if resume is None:
        fed = server_population(cfg)  # simulation: the data set's users; deployment: N devices (server.deployment)
        # target epsilons -> noise multipliers, before anything runs (the population includes audit canary clients)
        cfg = resolve_noise(cfg, fed.users + cfg.audit.canary_clients)
        run = new_run_dir(cfg)
        write_config(run, cfg, population=fed.users, catalog_size=len(fed.catalog),
                     load_summary=fed.summary.lines())
        write_catalog(run, fed.catalog)
    else:  # the same directory and settings, the state of the last checkpointed round
        run = Path(resume)
        cfg = resumable_config(run, given=cfg)
        saved = load_checkpoint(run)
        fed = server_population(cfg)
    model = build_model(cfg, fed.catalog)  # also writes the catalog table cache the clients will read
    global_state: State = seeded_adapter(model)  # seeded, not the cached model's current weights
    nodes = wait_for_nodes(grid, fed.users + cfg.audit.canary_clients)
    nodes = start_deployment(grid, cfg, nodes, fed.catalog)  # deployed run: N nodes, each sent the catalog
    # Stable identity before any sampling: simulated nodes get random ids in every run, so order them by the
    # partition (user) they hold (server.node_order); a deployment keeps node-id order.
    order = NodeOrder(sorted(nodes)) if cfg.run.deployment_nodes else order_nodes(grid, nodes)
    nodes = order.nodes
    # empirical privacy audit (server.audit): canary clients are nodes too, but never evaluated
    audit = ServerAudit.start(grid, cfg, run, nodes=nodes, users=fed.users, catalog=fed.catalog,
                              seed=saved.audit_seed if saved is not None else None, partitions=order.partitions)
    users = audit.real_nodes if audit is not None else nodes
    initial_state = {k: v.copy() for k, v in global_state.items()}
    rounds: list[dict[str, Any]] = []
    client_rows: list[dict[str, Any]] = []
    record_eps: dict[int, float] = {}  # node -> latest record-level epsilon the device reported
    dp = UserLevelDP(cfg, len(nodes)) if cfg.user_dp.enabled else None
    succeeded, adapter_round, done = 0, 0, 0  # rounds that released; round of the adapter; rounds completed

    def checkpoint() -> Checkpoint:  # everything the rest of the run depends on (server.checkpoint)
        return Checkpoint(round=done, global_state=global_state, adapter_round=adapter_round, succeeded=succeeded,
                          rounds=rounds, client_rows=client_rows,
                          record_epsilons={order.key(n): e for n, e in record_eps.items()},
                          identity="partition" if order.by_partition else "node-id",
                          user_dp=dp.secret_state() if dp is not None else None,
                          audit_seed=audit.secret_seed if audit is not None else None,
                          audit_seconds=audit.seconds if audit is not None else 0.0,
                          initial_state=initial_state if audit is not None else None)

    if saved is None:
        save_checkpoint(run, checkpoint())  # round 0: the secret generators' and the audit's starting state
    else:
        where = str(state_path(run))
        identity = "partition" if order.by_partition else "node-id"
        if saved.identity != identity or (saved.user_dp is None) != (dp is None):
            raise CheckpointError(f"{where}: does not match this federation (nodes by {saved.identity}, here by "
                                  f"{identity}; user-level DP state {'present' if saved.user_dp else 'absent'})")
        done, adapter_round, succeeded = saved.round, saved.adapter_round, saved.succeeded
        rounds, client_rows, global_state = saved.rounds, saved.client_rows, saved.global_state
        initial_state = saved.initial_state if saved.initial_state is not None else initial_state
        record_eps = {order.node(k): e for k, e in saved.record_epsilons.items()}
        if dp is not None:
            dp.restore(saved.user_dp or {}, where=where)
        if audit is not None:
            audit.seconds += saved.audit_seconds
        # re-derive the public outputs from the checkpoint: the killed server may have died before writing them
        _publish(run, dp, rounds, client_rows, adapter=(global_state, adapter_round) if adapter_round else None)
        note_resumed(run, from_round=done)
    down = state_bytes(global_state)
    emit("start", {"run_dir": str(run), "clients": len(nodes), "catalog": len(fed.catalog),
                   "adapter_params": int(sum(v.size for v in global_state.values())), "adapter_bytes": down,
                   "resumed_after_round": saved.round if saved is not None else None})
    for server_round in range(done + 1, cfg.run.rounds + 1):
        t0 = time.perf_counter()
        first_row = len(client_rows)
        if dp is not None and dp.would_exceed_budget():
            log.warning("round %d: stopping, the next release would exceed user-epsilon-max %.3g",
                        server_round, cfg.user_dp.epsilon_max)
            rounds.append({"round": server_round, "status": "stopped: user-level budget"})
            write_rows(run, "rounds", rounds)
            emit("round", {**rounds[-1], "sampled": 0, "updates": 0, "train_loss": float("nan"), "wall_seconds": 0.0})
            break
        rng = np.random.default_rng([cfg.run.seed, 0, server_round])  # per-round stream: resumable, order-free
        if dp is not None:
            sampled = dp.sample(nodes)
        elif cfg.run.client_sampling == "poisson":
            q = cfg.run.clients_sampled(len(nodes)) / len(nodes)
            sampled = [n for n, keep in zip(nodes, rng.random(len(nodes)) < q, strict=True) if keep]
        else:
            sampled = _sample(nodes, cfg.run.clients_sampled(len(nodes)), rng)
        train_messages = _messages(grid, sampled, MessageType.TRAIN, global_state, cfg, server_round, run,
                                   per_node=audit.train_config(sampled) if audit is not None else None)
        secure = SecureRound(cfg, server_round, max_clients=len(sampled)) if cfg.secagg.enabled else None
        if secure is not None:
            secure.attach(train_messages)  # the round's session id and encoding
        replies = list(grid.send_and_receive(train_messages)) if sampled else []
        advertised = {}  # secure aggregation: node -> the public keys it sent instead of its delta
        deltas, weights, losses, tokens, rss, failures, declined = [], [], [], 0, [], [], 0
        for reply in replies:
            node = reply.metadata.src_node_id
            row = {"round": server_round, "node": node, "phase": "train", "bytes_down": down}
            if reply.has_error():
                failures.append(reply.error.reason)
                client_rows.append({**row, "bytes_up": 0, "status": f"error: {reply.error.reason[:200]}"})
                continue
            m = reply.content.get("metrics") or {}
            if "record-epsilon" in m:
                record_eps[node] = float(m["record-epsilon"])
            if int(m.get("declined", 0)) == 1:  # the device's record-level budget is spent: a dropout
                declined += 1
                client_rows.append({**row, "bytes_up": 0, "status": "declined: device privacy budget"})
                continue
            try:
                if secure is not None:  # the delta stays on the device until it is masked (secure_aggregation)
                    advertised[node] = secure.read_keys(reply)
                else:
                    delta = record_to_state(reply.content["arrays"])
                    check_delta(delta, global_state)
            except (KeyError, ValueError) as e:
                failures.append(f"node {node}: bad reply: {e}")
                client_rows.append({**row, "bytes_up": 0, "status": f"rejected: {e}"})
                continue
            if secure is not None:
                rss.append(float(m["peak-rss-mb"]))
                client_rows.append({**row, "bytes_up": 0, "seconds": float(m["train-seconds"]), "status": "keys sent"})
                continue
            if dp is not None:  # clients clip; the server enforces the bound it accounts for
                delta, _ = clip_state(delta, clip_norm=cfg.user_dp.clip_norm)
            deltas.append(delta)
            weights.append(1.0 if cfg.run.aggregation_weights == "equal" else float(m["num-examples"]))
            if "train-loss" in m:  # data-dependent: not sent under DP unless dp-diagnostics
                losses.append(float(m["train-loss"]))
                tokens += int(m["grad-tokens"])
            rss.append(float(m["peak-rss-mb"]))
            client_rows.append({**row, "bytes_up": state_bytes(delta), "seconds": float(m["train-seconds"]),
                                "status": "ok"})
        failures += [f"node {n}: no reply" for n in set(sampled) - {r.metadata.src_node_id for r in replies}]
        secured = secure.run(grid, advertised, global_state) if secure is not None else None
        if secured is not None:
            client_rows.extend(secured.client_rows(server_round))
            failures += [f"node {n}: secure aggregation: dropped at {why}" for n, why in secured.dropouts.items()]
        for f in failures:
            log.warning("round %d: %s", server_round, f)
        released = False
        if secured is not None and secured.aborted:
            # Too few clients survived to unmask the sum: nothing is released, nothing enters the user-level
            # ledger (record-level spend on the devices stays counted: they trained).
            log.warning("round %d: secure aggregation aborted, nothing released: %s", server_round, secured.aborted)
        elif dp is not None:
            # Under DP every round releases a noisy aggregate, even with no survivor (noise only): the
            # accountant counts every round, so skipping one would gain nothing and the output would be missing.
            if secured is not None and secured.total is not None:  # the server only ever sees this sum
                noisy = dp.release_sum(secured.total, clients=len(secured.survivors), sampled=len(sampled),
                                       server_round=server_round)
            else:
                noisy = dp.release(deltas, global_state, sampled=len(sampled), server_round=server_round)
            global_state = apply_update(global_state, noisy, cfg.run.server_learning_rate)
            released = True
        elif secured is not None and secured.total is not None:  # equal weights: sum / survivors
            mean = {k: (v / len(secured.survivors)).astype(np.float32) for k, v in secured.total.items()}
            global_state = apply_update(global_state, mean, cfg.run.server_learning_rate)
            released = True
        elif deltas and sum(weights) > 0:
            global_state = apply_update(global_state, weighted_mean(deltas, weights), cfg.run.server_learning_rate)
            released = True
        if released:
            succeeded += 1
            adapter_round = server_round
        train_s = time.perf_counter() - t0
        updates = len(secured.survivors) if secured is not None else len(deltas)
        status = "ok" if updates else ("noise only" if released else "failed")
        row: dict[str, Any] = {
            "round": server_round,
            "status": f"aborted: {secured.aborted}" if secured is not None and secured.aborted else status,
            "sampled": len(sampled),
            "updates": updates,
            "failed": len(failures),
            "declined": declined,
            "train_seconds": round(train_s, 3),
            "client_updates_per_s": round(updates / train_s, 4) if train_s > 0 else 0.0,
            "bytes_down_per_client": down,
            "bytes_up_per_client": state_bytes(global_state),
            "train_loss": float(np.mean(losses)) if losses else float("nan"),
            "grad_tokens_per_s": round(tokens / train_s, 1) if train_s > 0 else 0.0,
            "client_peak_rss_mb": max(rss) if rss else float("nan"),
        }
        if secured is not None:
            row.update(secured.info)
        if server_round % cfg.eval.every == 0 or server_round == cfg.run.rounds:
            row.update(_evaluate(grid, users, global_state, cfg, server_round, len(fed.catalog), client_rows, run))
        row["wall_seconds"] = round(time.perf_counter() - t0, 3)
        row["server_peak_rss_mb"] = round(_peak_rss_mb(), 1)
        rounds.append(row)
        client_rows[first_row:] = [order.annotate(r) for r in client_rows[first_row:]]
        done = server_round
        # Checkpoint BEFORE the round's public outputs (server.checkpoint): a kill between the two re-publishes
        # this round on resume; the other order would release it twice with fresh noise and count it once.
        save_checkpoint(run, checkpoint())
        _publish(run, dp, rounds, client_rows, adapter=(global_state, server_round) if released else None)
        emit("round", row)
    empirical = None
    if audit is not None:  # scored with the final global adapter only, then compared with the secret bits
        empirical = audit.finish(model, fed.catalog, initial=initial_state, final=global_state,
                                 record_epsilons=record_eps, user_epsilon=user_level_epsilon(dp),
                                 user_delta=dp.delta if dp is not None else None, population=len(nodes))
    if cfg.user_dp.enabled or cfg.record_dp.enabled:
        write_run_report(run, cfg, dp, rounds_run=len([r for r in rounds if "updates" in r and "sampled" in r]),
                         empirical_audit=empirical,
                         record_epsilons=list(record_eps.values()),
                         rounds_without_release=tuple(r["round"] for r in rounds
                                                      if str(r.get("status", "")).startswith("aborted")),
                         secure_rounds=[r for r in rounds if "secagg_ring_bits" in r])
    mark_finished(run, rounds=done)  # deletes the checkpoint's secrets: a finished run cannot be resumed
    if succeeded == 0:
        raise AllRoundsFailed(f"all {cfg.run.rounds} rounds failed; see {run / 'clients.csv'}")
    emit("done", {"run_dir": str(run), "rounds": rounds})
    return run


def _publish(run: Path, dp: UserLevelDP | None, rounds: list[dict[str, Any]], client_rows: list[dict[str, Any]], *,
             adapter: tuple[State, int] | None) -> None:
    """The run's public outputs as of the last checkpoint: the user-level ledger, the adapter (if a round
    released one), the round and client rows. Called only after `save_checkpoint`, never before."""
    if dp is not None and len(dp.ledger):
        dp.ledger.save(run / "ledger-user.json")
    if adapter is not None:
        write_adapter(run, *adapter)
    if rounds:
        write_rows(run, "rounds", rounds)
        write_rows(run, "clients", client_rows)


def _evaluate(grid: Grid, nodes: list[int], state: State, cfg: RunConfig, server_round: int, num_items: int,
              client_rows: list[dict[str, Any]], run: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    rng = np.random.default_rng([cfg.run.seed, 1, server_round])
    # a sample every `evaluate-every` rounds keeps evaluation from dominating; the final one covers every user
    fraction = cfg.eval.fraction_final if server_round == cfg.run.rounds else cfg.eval.fraction
    k = max(1, int(round(fraction * len(nodes))))
    chosen = _sample(nodes, k, rng)
    replies = grid.send_and_receive(_messages(grid, chosen, MessageType.EVALUATE, state, cfg, server_round, run))
    total = RankingMetrics(num_items=num_items)
    failed = 0
    for reply in replies:
        row = {"round": server_round, "node": reply.metadata.src_node_id, "phase": "evaluate",
               "bytes_down": state_bytes(state), "bytes_up": 0}
        if reply.has_error():
            failed += 1
            client_rows.append({**row, "status": f"error: {reply.error.reason[:200]}"})
            continue
        rec = reply.content["metrics"]
        total = total.merge(record_to_metrics(rec))
        client_rows.append({**row, "seconds": float(rec["eval-seconds"]), "status": "ok"})
    out = {f"eval_{k}": v for k, v in total.summary().items()}
    out["eval_failed"] = failed
    out["eval_seconds"] = round(time.perf_counter() - t0, 3)
    return out
