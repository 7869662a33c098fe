"""The server's half of the empirical privacy audit: draw the canaries, tell each node its part, measure at the end.

Ground truth stays with the server. At the start it draws, from a seed it keeps secret (`secrets`, unless the
run sets `audit-seed` for a reproducible test), the record canaries, their hosts and membership bits, and the
canary clients' bits and direction seeds, and writes them to `<run>/audit/canaries.json` (the run directory
is the server's; publish that file only after training). Each node learns only its own part, in its train
messages (`fedrec.shared.privacy.canaries.AUDIT_KEY`): the host of an included record canary gets that canary, an
included canary client gets its direction seed, every other node gets nothing. At the end the canaries are
scored with the final global adapter alone, the guesses are fixed from the scores alone, and only then are
they compared with the bits (`fedrec.shared.privacy.empirical`). Results go to `<run>/audit/results.json`
and into the run's privacy report (`empirical_audit`).

Canary clients are the auditor's own virtual clients. In a simulation they are the partitions after the real
users'; since node ids are random, the server learns which node is which from the partition handshake at the
start of the run (`fedrec.server.node_order`), or else asks every node once (a query message). A deployment would
register its canary clients itself and skip that question.
"""

from __future__ import annotations

import json
import logging
import math
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from fedrec.server.release import DpFedAvgRelease, add_weighted
from fedrec.shared.config import RunConfig
from fedrec.shared.data.types import Catalog
from fedrec.shared.io import atomic_write_text
from fedrec.shared.model.build import set_global_state
from fedrec.shared.model.recommender import Recommender
from fedrec.shared.model.scoring import NEG_INF, prepare_for_scoring, score_prompts
from fedrec.shared.privacy.accountants import make_accountant
from fedrec.shared.privacy.calibrate import default_user_delta
from fedrec.shared.privacy.canaries import (
    CANARY_HISTORY_ITEMS,
    AuditInstructions,
    RecordCanary,
    canary_client_index,
    canary_direction,
    canary_examples,
    draw_record_canaries,
    inner_product,
)
from fedrec.shared.privacy.empirical import CONFIDENCE, canary_cosine_estimate, guess_counts, one_run_audit
from fedrec.shared.protocol import QUERY_CANARY_CLIENTS, ROLE_METRIC

log = logging.getLogger("fedrec.server")

State = dict[str, np.ndarray]

AUDIT_DIR = "audit"
CANARIES_FILE = "canaries.json"
RESULTS_FILE = "results.json"

RECORD_METHOD = ("one-run audit (Steinke, Nasr & Jagielski, NeurIPS 2023): membership guesses on record canaries, "
                 "epsilon lower bound from the binomial tail with the delta term")
RECORD_CANARY = (f"one training example made of public catalog items only: a history prompt of "
                 f"{CANARY_HISTORY_ITEMS} random artists and a random target artist (unique per canary), on a "
                 "random user's device (at most one per device)")
RECORD_SCORE_BIAS = ("the change of the canary target's learned item bias, final global adapter minus initial (read "
                     "from the released adapter: a white-box score on the coordinate the canary's example moves most)")
RECORD_SCORE_LOGPROB = ("log-softmax of the canary's target over the catalog (its history items masked) given its "
                        "history prompt, final global adapter minus initial adapter")
ITEM_BIAS = "item_bias.weight"  # (N, 1): the per-item bias in the adapter state (fedrec.shared.model)
USER_METHOD = ("white-box one-run audit (Steinke, Nasr & Jagielski, NeurIPS 2023) on canary clients (Andrew et al., "
               "ICLR 2024): membership guesses from each canary's score over every released update, epsilon lower "
               "bound from the binomial tail with the delta term; plus Andrew et al.'s one-shot estimate")
USER_CANARY = ("a virtual client with no data whose update is a fixed uniformly random unit direction over the "
               "whole adapter times the clip norm S (zeros when excluded), inserted in every round it is sampled, "
               "sampled like every other client")
USER_SCORE = ("the inner product of each round's released noisy update with the canary's direction, summed over "
              "all rounds (white-box: every intermediate release is observed; the score does not use which rounds "
              "the canary was sampled in, which the sampling claim assumes secret); the estimate uses the same sum "
              "as a cosine")
ESTIMATE_METHOD = ("Andrew et al. (ICLR 2024) one-shot estimate: epsilon of the Gaussian pair (null N(0, 1/d), "
                   "N(mean, std^2) fitted to the inserted canaries' cosines); an estimate, not a bound")


class AuditError(RuntimeError):
    """The audit cannot be set up as configured (for example more record canaries than users)."""


@dataclass
class ServerAudit:
    """One run's canaries, their ground truth, and the nodes that play each part."""

    cfg: RunConfig
    run: Path
    secret_seed: int = field(repr=False)
    real_nodes: list[int]
    record_canaries: list[RecordCanary]
    record_hosts: list[int]  # node id of each record canary's host
    record_in: np.ndarray  # (m,) bool
    client_nodes: list[int]  # node id of canary client i
    client_in: np.ndarray  # (K,) bool
    client_seeds: list[int] = field(repr=False)
    seconds: float = 0.0  # server time spent on the audit (handshake, drawing, scoring, bounds)
    released: State | None = field(default=None, repr=False)  # sum of the released updates (canary clients' score)

    # -- setup ------------------------------------------------------------------------------------------------

    @classmethod
    def start(cls, grid: Grid, cfg: RunConfig, run: Path, *, nodes: list[int], users: int,
              catalog: Catalog, seed: int | None = None,
              partitions: Mapping[int, int] | None = None) -> ServerAudit | None:
        """Identify the canary clients among `nodes`, draw everything, write canaries.json; None if no audit.

        `seed`: a resumed run's secret seed (from its checkpoint), so it draws the same canaries, hosts and bits;
        with `nodes` in partition order (`fedrec.server.node_order`) the hosts are the same users too.
        `partitions`: node id -> partition, when the partition handshake already asked (then the canary clients
        are the last partitions, as each node computes itself, and no second query goes out).
        """
        if not (cfg.audit.canaries or cfg.audit.canary_clients):
            return None
        t0 = time.perf_counter()
        roles = (canary_roles(partitions, nodes, cfg.audit.canary_clients) if partitions else
                 identify_canary_clients(grid, nodes, cfg.audit.canary_clients))
        real = [n for n in nodes if n not in roles]
        if len(real) != users:
            raise AuditError(f"{len(real)} nodes are users' devices but the data set has {users} users")
        m, k = cfg.audit.canaries, cfg.audit.canary_clients
        if m > len(real):
            raise AuditError(f"audit-canaries: at most one record canary per device, so at most {len(real)} "
                             f"(the number of users); found {m}")
        seed = seed or cfg.audit.seed or secrets.randbits(63)
        rng = np.random.default_rng([seed, 0xA0D17])
        canaries = draw_record_canaries(len(catalog), m, rng) if m else []
        hosts = [real[int(i)] for i in rng.choice(len(real), size=m, replace=False)] if m else []
        record_in = rng.random(m) < 0.5
        client_in = rng.random(k) < 0.5
        client_seeds = [int(s) for s in rng.integers(0, 2**63 - 1, size=k)]
        by_index = {i: n for n, i in roles.items()}
        audit = cls(cfg=cfg, run=run, secret_seed=seed, real_nodes=real, record_canaries=canaries,
                    record_hosts=hosts, record_in=record_in, client_nodes=[by_index[i] for i in range(k)],
                    client_in=client_in, client_seeds=client_seeds)
        audit._write_canaries()
        audit.seconds += time.perf_counter() - t0
        log.warning("fedrec audit: %d record canaries (%d in), %d canary clients (%d in); ground truth in %s",
                    m, int(record_in.sum()), k, int(client_in.sum()), run / AUDIT_DIR / CANARIES_FILE)
        return audit

    def _write_canaries(self) -> None:
        doc = {
            "warning": "ground truth of the audit: which canaries were included. Keep it secret until training "
                       "is over; anyone who has it before then can tell the in-canaries from the out-canaries.",
            "secret_seed": self.secret_seed,
            "record_canaries": [{**c.to_json(), "host_node": int(h), "included": bool(b)}
                                for c, h, b in zip(self.record_canaries, self.record_hosts, self.record_in,
                                                   strict=True)],
            "canary_clients": [{"node": int(n), "direction_seed": int(s), "included": bool(b)}
                               for n, s, b in zip(self.client_nodes, self.client_seeds, self.client_in, strict=True)],
        }
        atomic_write_text(self.run / AUDIT_DIR / CANARIES_FILE, json.dumps(doc, indent=1))

    # -- during training ----------------------------------------------------------------------------------------

    def train_config(self, sampled: Iterable[int]) -> dict[int, dict[str, str]]:
        """Per-node extra message config for this round's sampled nodes (only nodes with something to do)."""
        wanted = set(sampled)
        out: dict[int, dict[str, str]] = {}
        for c, host, included in zip(self.record_canaries, self.record_hosts, self.record_in, strict=True):
            if included and host in wanted:
                out[host] = AuditInstructions(record_canaries=(c,)).to_config()
        for node, seed, included in zip(self.client_nodes, self.client_seeds, self.client_in, strict=True):
            if included and node in wanted:
                out[node] = AuditInstructions(direction_seed=seed).to_config()
        return out

    def is_canary_client(self, node: int) -> bool:
        return node in set(self.client_nodes)

    def observe(self, update: State) -> None:
        """A round's released update (the noisy mean it applies). A canary client's score is the sum over rounds of
        the inner product of each release with its direction, which is the inner product with their running sum,
        kept here (float64; saved in the checkpoint)."""
        if self.client_nodes:
            self.released = add_weighted(self.released, update, 1.0)

    # -- at the end ---------------------------------------------------------------------------------------------

    def finish(self, model: Recommender, catalog: Catalog, *, initial: State, final: State,
               record_epsilons: Mapping[int, float], user_epsilon: float | None, user_delta: float | None,
               population: int) -> dict[str, Any]:
        """Score, guess, count, bound; write results.json; return the report's `empirical_audit` section."""
        t0 = time.perf_counter()
        audits: list[dict[str, Any]] = []
        details: dict[str, Any] = {}
        if self.record_canaries:
            scores = record_canary_scores(model, self.record_canaries, catalog, self.cfg, initial=initial,
                                          final=final)
            k_plus, k_minus = guess_counts(len(scores), self.cfg.audit.guess_fraction)
            delta = self.cfg.record_dp.delta
            result = one_run_audit(scores, self.record_in, k_plus=k_plus, k_minus=k_minus, delta=delta,
                                   confidence=CONFIDENCE)
            reported = [record_epsilons[h] for h in self.record_hosts if h in record_epsilons]
            if self.cfg.record_dp.enabled:
                claimed: float | None = max(reported) if reported else 0.0
                source = (f"the largest record-level epsilon that the {len(reported)} canary hosts that trained "
                          f"reported (each canary is protected by its host's guarantee)" if reported else
                          "no canary host trained, so no canary influenced any release (epsilon 0)")
            else:
                claimed, source = None, "none: record-level DP (record-dp) was off"
            score = RECORD_SCORE_BIAS if ITEM_BIAS in initial else RECORD_SCORE_LOGPROB
            audits.append(_entry("record-level", RECORD_METHOD, RECORD_CANARY, score, result, claimed, source))
            details["record_level"] = {"scores": [float(s) for s in scores], "included": self.record_in.tolist(),
                                       "hosts_that_trained": len(reported)}
        if self.client_nodes:
            released = self.released or {k: np.zeros(np.shape(v)) for k, v in initial.items()}
            norm = math.sqrt(sum(float(np.sum(v * v)) for v in released.values()))
            # one direction at a time (a thousand canaries' directions would be gigabytes); the cosine is the score
            # over the released sum's norm, the same order, in the units of the estimate's null N(0, 1/d)
            scores = np.array([inner_product(canary_direction(initial, s), released) for s in self.client_seeds])
            cosines = scores / norm if norm > 0 else np.zeros_like(scores)
            k_plus, k_minus = guess_counts(len(scores), self.cfg.audit.guess_fraction)
            delta = user_delta if user_delta is not None else (self.cfg.user_dp.delta or default_user_delta(population))
            result = one_run_audit(scores, self.client_in, k_plus=k_plus, k_minus=k_minus, delta=delta,
                                   confidence=CONFIDENCE)
            dim = int(sum(np.size(v) for v in initial.values()))
            estimate = canary_cosine_estimate(cosines[self.client_in], dimension=dim, delta=delta)
            if self.cfg.user_dp.enabled and user_epsilon is not None:
                claimed, source = user_epsilon, "the run's user-level epsilon (user_level.accounting.epsilon)"
            elif self.cfg.user_dp.enabled:
                claimed, source = None, "none: no aggregate was released (the user-level ledger is empty)"
            else:
                claimed, source = None, "none: user-level DP (user-dp) was off"
            entry = _entry("user-level", USER_METHOD, USER_CANARY, USER_SCORE, result, claimed, source)
            out = cosines[~self.client_in]
            entry["estimate"] = None if estimate is None else {
                "method": ESTIMATE_METHOD, "inserted": estimate.inserted, "dimension": estimate.dimension,
                "mean": estimate.mean, "std": estimate.std, "null_std": estimate.null_std, "delta": estimate.delta,
                "epsilon": estimate.epsilon if math.isfinite(estimate.epsilon) else None}
            entry["null_check"] = {"excluded": int(out.size), "mean": float(out.mean()) if out.size else None,
                                   "std": float(out.std(ddof=1)) if out.size > 1 else None,
                                   "expected_std": dim ** -0.5}
            audits.append(entry)
            details["user_level"] = {"scores": scores.tolist(), "cosines": cosines.tolist(),
                                     "included": self.client_in.tolist()}
        self.seconds += time.perf_counter() - t0
        for a in audits:
            a["audit_seconds"] = round(self.seconds, 3)
        section = {"confidence": CONFIDENCE, "audits": audits}
        doc = {**section, "details": details, "audit_seconds": round(self.seconds, 3)}
        atomic_write_text(self.run / AUDIT_DIR / RESULTS_FILE, json.dumps(doc, indent=1))
        for a in audits:
            bound, claimed = a["epsilon_lower_bound"], a["claimed_epsilon"]
            if claimed is not None and bound > claimed:
                log.error("fedrec audit: %s empirical lower bound %.4g EXCEEDS the claimed epsilon %.4g: the "
                          "implementation leaks more than its accounting says (a privacy bug)", a["level"], bound,
                          claimed)
            else:
                log.warning("fedrec audit: %s lower bound %.4g (%d of %d guesses correct), claimed %s", a["level"],
                            bound, a["correct"], a["guesses"], "none" if claimed is None else f"{claimed:.4g}")
        return section


def _entry(level: str, method: str, canary: str, score: str, result, claimed: float | None,
           source: str) -> dict[str, Any]:
    r = asdict(result)
    return {"level": level, "method": method, "canary": canary, "score": score,
            "canaries": r["canaries"], "included": r["included"], "inclusion_probability": 0.5,
            "guesses_in": r["guesses_in"], "guesses_out": r["guesses_out"], "guesses": result.guesses,
            "correct": r["correct"], "confidence": r["confidence"], "delta": r["delta"],
            "epsilon_lower_bound": r["epsilon_lower_bound"], "claimed_epsilon": claimed, "claimed_source": source}


def canary_roles(partitions: Mapping[int, int], nodes: list[int], canary_clients: int) -> dict[int, int]:
    """{node id: canary index} from the nodes' partitions (the last `canary_clients` partitions are canaries)."""
    roles = {n: i for n in nodes if (i := canary_client_index(partitions[n], len(nodes), canary_clients)) is not None}
    if sorted(roles.values()) != list(range(canary_clients)):
        raise AuditError(f"audit: expected canary clients 0..{canary_clients - 1} among the partitions, found "
                         f"indices {sorted(roles.values())[:10]} (a simulation needs one SuperNode per user plus one "
                         "per canary client)")
    return roles


def identify_canary_clients(grid: Grid, nodes: list[int], canary_clients: int) -> dict[int, int]:
    """{node id: canary index} of the run's canary clients (a query to every node); {} when there are none."""
    if canary_clients == 0:
        return {}
    config = ConfigRecord({QUERY_CANARY_CLIENTS: canary_clients})
    messages = [Message(RecordDict({"config": config}), dst_node_id=n, message_type=MessageType.QUERY)
                for n in nodes]
    roles: dict[int, int] = {}
    problems = []
    for reply in grid.send_and_receive(messages):
        node = reply.metadata.src_node_id
        if reply.has_error():
            problems.append(f"node {node}: {reply.error.reason[:200]}")
            continue
        index = int(reply.content["metrics"][ROLE_METRIC])
        if index >= 0:
            roles[node] = index
    if problems or sorted(roles.values()) != list(range(canary_clients)):
        raise AuditError(f"audit handshake: expected canary clients 0..{canary_clients - 1}, found indices "
                         f"{sorted(roles.values())[:10]}; {'; '.join(problems[:3]) or 'no errors'} (a simulation "
                         f"needs one SuperNode per user plus one per canary client)")
    return roles


def record_canary_scores(model: Recommender, canaries: list[RecordCanary], catalog: Catalog, cfg: RunConfig, *,
                         initial: State, final: State) -> np.ndarray:
    """One membership score per canary, from the final adapter (higher = more likely trained on), fixed in advance.

    With an item bias (the default model): the change of the target's bias. Training on a canary raises its
    target's bias by about lr / B per step, which nothing else does to a random target that no user plays,
    whereas the history-conditional score below also moves with every change of the user tower (measured on
    synthetic data: far noisier). Without an item bias: log p_final(target | history) - log p_initial(...),
    history items masked, as in training.
    """
    targets = np.asarray([c.target for c in canaries], dtype=np.int64)
    if ITEM_BIAS in initial:
        return (np.asarray(final[ITEM_BIAS], dtype=np.float64)[targets, 0]
                - np.asarray(initial[ITEM_BIAS], dtype=np.float64)[targets, 0])
    return _log_prob_scores(model, canaries, catalog, cfg, initial=initial, final=final)


def _log_prob_scores(model: Recommender, canaries: list[RecordCanary], catalog: Catalog, cfg: RunConfig, *,
                     initial: State, final: State) -> np.ndarray:
    prompts, targets, histories = canary_examples(canaries, catalog, cfg)

    def log_probs(state: State) -> np.ndarray:
        set_global_state(model, state)
        prepare_for_scoring(model, catalog, cfg)
        out = np.empty(len(prompts))
        for start in range(0, len(prompts), 128):
            logits = score_prompts(model, prompts[start:start + 128], cfg).astype(np.float64)  # (b, N)
            for row, (t, h) in enumerate(zip(targets[start:start + 128], histories[start:start + 128],
                                             strict=True)):
                z = logits[row]
                z[h] = NEG_INF
                top = z.max()
                out[start + row] = z[t] - top - math.log(np.exp(z - top).sum())
        return out

    before = log_probs(initial)
    after = log_probs(final)
    set_global_state(model, final)
    return after - before


def user_level_epsilon(dp: DpFedAvgRelease | None) -> float | None:
    """The run's user-level epsilon as its report states it (its accountant at the run's delta); None without
    user-level DP."""
    if dp is None:
        return None
    if not len(dp.ledger):
        return None  # nothing released, and the report has no user-level section
    return make_accountant(dp.accountant, adjacency=dp.ledger.adjacency).epsilon(dp.ledger.events(), delta=dp.delta)
