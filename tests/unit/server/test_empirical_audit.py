"""Audit canaries on the device side: wire instructions, canary-client partitions and directions, a record canary in
one more (audit) slot of DP-SGD, and a canary that never reaches the evaluation."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Message, MessageType, Metadata, RecordDict

from fedrec.client.client_app import evaluate as client_evaluate
from fedrec.client.client_app import train as client_train
from fedrec.shared.config import ConfigError, RunConfig
from fedrec.shared.data.federation import load_federation
from fedrec.shared.model.build import build_model, set_global_state
from fedrec.shared.model.recommender import trainable_state
from fedrec.shared.privacy.canaries import (
    AuditInstructions,
    RecordCanary,
    canary_client_index,
    canary_client_update,
    canary_direction,
    cosine_with,
    draw_record_canaries,
    record_slots,
)
from fedrec.shared.privacy.mechanisms import l2_norm
from fedrec.shared.protocol import AUDIT_KEY, CANARY_METRIC, record_to_state, state_to_record
from fedrec.shared.train.dp_sgd import new_record_ledger, plan_round, train_local_private
from fedrec.shared.train.local import train_local

CFG = RunConfig.from_mapping({"data.source": "synthetic:users=20,items=50,seed=0", "model.lora_rank": 4,
                              "model.history_tokens": 32, "model.item_tokens": 16, "train.examples_per_user": 8,
                              "record_dp.expected_batch": 2, "record_dp.accountant": "rdp", "audit.canaries": 5})


@pytest.fixture(scope="module")
def cfg(tiny_llama_dir: Path) -> RunConfig:
    return CFG.updated({"model.name": str(tiny_llama_dir)})


def test_instructions_round_trip_through_the_message_config() -> None:
    """Only nodes with something to do get the key; what they get is what was sent; garbage is refused."""
    # Prepare
    host = AuditInstructions(record_canaries=(RecordCanary(7, (1, 2, 3)),))
    client = AuditInstructions(direction_seed=2**62 + 5)
    # Execute / Assert
    assert AuditInstructions().to_config() == {}
    assert AuditInstructions.from_config(ConfigRecord({**CFG.to_flat(), **host.to_config()})) == host
    assert AuditInstructions.from_config(client.to_config()) == client
    assert AuditInstructions.from_config({}) == AuditInstructions()
    with pytest.raises(ValueError, match=rf"message config '{AUDIT_KEY}': not valid audit instructions"):
        AuditInstructions.from_config({AUDIT_KEY: "{\"record_canaries\": [{\"target\": 1}]}"})


def test_canary_clients_are_the_partitions_after_the_users() -> None:
    assert [canary_client_index(p, 7, 3) for p in range(7)] == [None, None, None, None, 0, 1, 2]
    assert canary_client_index(3, 4, 0) is None
    with pytest.raises(ValueError, match="5 canary clients among 4 partitions"):
        canary_client_index(0, 4, 5)


def test_canary_direction_is_a_seeded_unit_vector_and_the_update_has_norm_s() -> None:
    """Server and canary client draw the same direction from a seed; the update is S times it, or zeros."""
    # Prepare
    template = {"b": np.zeros((3, 4), np.float32), "a": np.zeros(5, np.float32)}
    # Execute
    d1, d2, other = canary_direction(template, 11), canary_direction(dict(reversed(template.items())), 11), \
        canary_direction(template, 12)
    update = canary_client_update(template, seed=11, norm=2.5)
    # Assert
    assert all(np.array_equal(d1[k], d2[k]) for k in template)  # key order of the template does not matter
    assert l2_norm(d1) == pytest.approx(1.0) and not np.allclose(d1["a"], other["a"])
    assert l2_norm(update) == pytest.approx(2.5, rel=1e-6) and cosine_with(d1, update) == pytest.approx(1.0)
    assert l2_norm(canary_client_update(template, seed=None, norm=2.5)) == 0.0


def test_record_canaries_have_distinct_targets_outside_every_history() -> None:
    canaries = draw_record_canaries(50, 20, np.random.default_rng(0))
    targets = {c.target for c in canaries}
    assert len(targets) == 20 and all(len(c.history) == 5 and not targets & set(c.history) for c in canaries)
    with pytest.raises(ValueError, match="at most 25"):
        draw_record_canaries(50, 26, np.random.default_rng(0))


def test_config_checks_the_audit_settings() -> None:
    with pytest.raises(ConfigError, match=r"audit.guess_fraction: must be in \(0, 0.5\], found 0.7"):
        CFG.updated({"audit.guess_fraction": 0.7})
    with pytest.raises(ConfigError,
                       match=r"record_dp.delta: must be < 1 / \(train.examples_per_user \+ 1\) = 0.111111"):
        CFG.updated({"record_dp.enabled": True, "record_dp.delta": 0.115})


def test_a_record_canary_fills_the_audit_slot_of_dp_sgd(cfg: RunConfig) -> None:
    """With record canaries on, every device samples K + 1 slots (q and the ledger do not say who hosts one); a
    host's canary is one more example; a device cannot host two."""
    # Prepare
    dp = cfg.updated({"record_dp.enabled": True})
    fed = load_federation(dp)
    model = build_model(dp, fed.catalog)
    canary = draw_record_canaries(len(fed.catalog), 1, np.random.default_rng(1))[0]
    host, plain = new_record_ledger(subject="host"), new_record_ledger(subject="plain")
    # Execute
    with_canary = train_local_private(model, fed.splits[0], fed.catalog, dp, seed=1, ledger=host, server_round=1,
                                      noise_seed=1, canaries=(canary,))
    without = train_local_private(model, fed.splits[0], fed.catalog, dp, seed=1, ledger=plain, server_round=1,
                                  noise_seed=1)
    # Assert
    assert record_slots(dp) == plan_round(dp).num_records == dp.train.examples_per_user + 1
    assert [e.metadata["num_records"] for e in host] == [e.metadata["num_records"] for e in plain] == [9]
    assert host.events() == plain.events()  # the same mechanism, so the same epsilon, host or not
    assert with_canary.examples == without.examples  # the canary is not counted as the user's example
    with pytest.raises(ValueError, match="2 audit canaries but 1 audit slots"):
        train_local_private(model, fed.splits[0], fed.catalog, dp, seed=1, ledger=new_record_ledger(),
                            server_round=2, canaries=(canary, canary))


def test_a_trained_record_canary_raises_its_targets_bias(cfg: RunConfig) -> None:
    """Without DP one round on a canary moves its target's item bias up (the audit's score), not the counts."""
    # Prepare
    fed = load_federation(cfg)
    model = build_model(cfg, fed.catalog)
    initial = {k: v.numpy().copy() for k, v in trainable_state(model).items()}
    canary = draw_record_canaries(len(fed.catalog), 1, np.random.default_rng(2))[0]
    # Execute
    stats = train_local(model, fed.splits[1], fed.catalog, cfg, seed=3, canaries=(canary,))
    bias = trainable_state(model)["item_bias.weight"].numpy()[:, 0].copy()
    set_global_state(model, initial)
    baseline = train_local(model, fed.splits[1], fed.catalog, cfg, seed=3)
    bias_without = trainable_state(model)["item_bias.weight"].numpy()[:, 0].copy()
    set_global_state(model, initial)
    # Assert
    assert stats.examples == baseline.examples
    assert bias[canary.target] - bias_without[canary.target] > 0.5


def _message(cfg: RunConfig, kind: str, state: dict[str, np.ndarray], extra: dict[str, str] | None = None) -> Message:
    config = ConfigRecord({**cfg.to_flat(), "server-round": 1, "seed": 0, **(extra or {})})
    meta = Metadata(run_id=1, message_id=f"{kind}-1", src_node_id=1, dst_node_id=7, reply_to_message_id="",
                    group_id="1", created_at=time.time(), ttl=3600.0, message_type=kind)
    return Message(RecordDict({"arrays": state_to_record(state), "config": config}), metadata=meta)


def _context(partition: int, partitions: int) -> Context:
    return Context(run_id=1, node_id=7, node_config={"partition-id": partition, "num-partitions": partitions},
                   state=RecordDict(), run_config={})


def test_canary_clients_send_their_direction_and_are_never_evaluated(cfg: RunConfig) -> None:
    """A canary client's train reply is S times its direction (zeros without a seed) and carries no loss; its
    evaluation has no user; a user's evaluation is the same with or without the audit."""
    # Prepare: 20 users + 3 canary clients
    audited = cfg.updated({"audit.canary_clients": 3, "user_dp.clip_norm": 2.0})
    fed = load_federation(audited)
    state = {k: v.numpy() for k, v in trainable_state(build_model(audited, fed.catalog)).items()}
    seed = AuditInstructions(direction_seed=99).to_config()
    # Execute
    included = client_train(_message(audited, MessageType.TRAIN, state, seed), _context(21, 23))
    excluded = client_train(_message(audited, MessageType.TRAIN, state), _context(22, 23))
    canary_eval = client_evaluate(_message(audited, MessageType.EVALUATE, state), _context(20, 23))
    user_eval = client_evaluate(_message(audited, MessageType.EVALUATE, state), _context(4, 23))
    plain_eval = client_evaluate(_message(cfg, MessageType.EVALUATE, state), _context(4, 20))
    # Assert
    delta = record_to_state(included.content["arrays"])
    assert cosine_with(canary_direction(state, 99), delta) == pytest.approx(1.0, abs=1e-6)
    assert l2_norm(delta) == pytest.approx(2.0, rel=1e-5)
    assert l2_norm(record_to_state(excluded.content["arrays"])) == 0.0
    metrics = included.content["metrics"]
    assert metrics[CANARY_METRIC] == 1 and "train-loss" not in metrics and "num-examples" not in metrics
    assert canary_eval.content["metrics"]["users"] == 0
    same = ("users", "hit_sum", "ndcg_sum", "sampled_hit_sum", "sampled_ndcg_sum")
    assert {k: user_eval.content["metrics"][k] for k in same} == {k: plain_eval.content["metrics"][k] for k in same}


def _white_box_audit(tmp_path: Path, *, canaries: int, noise: float, rounds: int = 5):
    """A ServerAudit with `canaries` canary clients (half in), fed `rounds` releases in which every included canary
    adds its direction (S = 1, all sampled: q = 1) plus Gaussian noise of std `noise` per coordinate."""
    from fedrec.server.empirical_audit import ServerAudit

    template = {"w": np.zeros((40, 25)), "b": np.zeros(300)}
    rng = np.random.default_rng(5)
    audit = ServerAudit(cfg=CFG.updated({"audit.canaries": 0, "audit.canary_clients": canaries,
                                         "audit.guess_fraction": 0.25}), run=tmp_path, secret_seed=1,
                        real_nodes=[], record_canaries=[], record_hosts=[], record_in=np.zeros(0, bool),
                        client_nodes=list(range(canaries)), client_in=rng.random(canaries) < 0.5,
                        client_seeds=[int(s) for s in rng.integers(0, 2**62, canaries)])
    sum_of_directions = {k: np.zeros_like(v) for k, v in template.items()}
    for i in np.flatnonzero(audit.client_in):
        d = canary_direction(template, audit.client_seeds[i])
        sum_of_directions = {k: sum_of_directions[k] + d[k] for k in template}
    releases = []
    for _ in range(rounds):
        update = {k: sum_of_directions[k] + rng.normal(0, noise, v.shape) for k, v in template.items()}
        releases.append(update)
        audit.observe(update)
    # the final adapter is deliberately NOT initial + sum of releases (a server learning rate, other releases):
    # the white-box score reads the releases themselves
    final = {k: v + rng.normal(size=v.shape) for k, v in template.items()}
    out = audit.finish(None, None, initial=template, final=final, record_epsilons={}, user_epsilon=None,
                       user_delta=1e-6, population=canaries)
    return audit, releases, template, out


def test_white_box_user_level_score_sums_each_release_inner_product(tmp_path: Path) -> None:
    """A canary client's score is the sum over rounds of <released update, its direction>, read from the releases
    (not from final - initial), and with little noise every guess is right and the bound is high."""
    import json

    audit, releases, template, out = _white_box_audit(tmp_path, canaries=80, noise=0.01)
    details = json.loads((tmp_path / "audit" / "results.json").read_text())["details"]["user_level"]
    for i in (0, 1, 2):
        d = canary_direction(template, audit.client_seeds[i])
        expected = sum(float(np.sum(d[k] * r[k])) for r in releases for k in template)
        assert details["scores"][i] == pytest.approx(expected, rel=1e-9)
    [a] = out["audits"]
    assert a["level"] == "user-level" and a["correct"] == a["guesses"] == 40 and a["epsilon_lower_bound"] > 2
    assert "summed over all rounds" in a["score"]


def test_white_box_user_level_audit_finds_nothing_in_pure_noise(tmp_path: Path) -> None:
    """Releases that hold no canary (noise std 100 per coordinate drowns the directions): no positive bound."""
    _, _, _, out = _white_box_audit(tmp_path, canaries=80, noise=100.0)
    assert out["audits"][0]["epsilon_lower_bound"] < 0.5
