"""Record-level DP-SGD on the device: per-example gradients, noisy steps (also on empty batches), the device ledger
across rounds and restarts, the budget decline in the train handler, and a cached model that is unhooked after use.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import ConfigRecord, Context, Message, Metadata, RecordDict
from flwr.common import MessageType
from opacus import GradSampleModule
from opacus.accountants import RDPAccountant

import fedrec.shared.train.dp_sgd as dp_sgd
from fedrec.client.client_app import train as client_train
from fedrec.client.device_state import resolve_state_dir
from fedrec.client.record_dp import PRIVACY_STATE, RECORD_LEDGER_KEY, load_record_ledger, save_record_ledger
from fedrec.shared.config import ConfigError, RunConfig
from fedrec.shared.data.federation import load_federation
from fedrec.shared.data.split import UserSplit
from fedrec.shared.data.types import Catalog
from fedrec.shared.model.build import build_model
from fedrec.shared.model.recommender import Recommender, load_trainable_state, trainable_state
from fedrec.shared.privacy import PrivacyLedger, make_accountant
from fedrec.shared.privacy.keys import load_public_key
from fedrec.shared.privacy.report import has_failures, read_report, verify_report_file
from fedrec.shared.protocol import state_to_record
from fedrec.shared.train.dp_sgd import DpSgdError, new_record_ledger, plan_round, record_epsilon, train_local_private
from fedrec.shared.train.examples import draw_examples, make_batch
from fedrec.shared.train.local import example_loss, make_optimizer

# The tiny_data catalog (synthetic users=20, items=50, seed=0), a small adapter and short prompts; 8 buckets and an
# expected batch of 2, so q = 2/n and a round is a few steps of about 2 examples. RDP keeps the accounting fast.
CFG = RunConfig.from_mapping({"data.source": "synthetic:users=20,items=50,seed=0", "model.lora_rank": 4,
                              "model.history_tokens": 32, "model.item_tokens": 16, "train.examples_per_user": 8,
                              "record_dp.enabled": True, "record_dp.expected_batch": 2, "record_dp.accountant": "rdp"})
OPACUS_ATTRS = ("grad_sample", "_forward_counter", "_current_grad_sample", "summed_grad")


@pytest.mark.parametrize(
    ("changes", "pattern"),
    [
        ({"record_dp.noise_multiplier": 0.0}, r"record_dp.noise_multiplier: must be > 0"),
        ({"record_dp.accountant": "pld"}, r"record_dp.accountant: must be 'prv' or 'rdp'"),
        ({"record_dp.delta": 0.2}, r"record_dp.delta: must be < 1 / train.examples_per_user = 0.125 with record_dp"),
        ({"model.item_tower": "shared-lora"}, r"model.item_tower: must be 'frozen' with record_dp"),
        ({"record_dp.expected_batch": 0}, r"record_dp.expected_batch: must be >= 1"),
    ],
)
def test_record_dp_settings_are_checked(changes: dict[str, object], pattern: str) -> None:
    """Out-of-range record-level DP settings fail when the configuration is built, naming key and value."""
    with pytest.raises(ConfigError, match=pattern):
        CFG.updated(changes)


@pytest.mark.parametrize(("n", "q", "per_epoch", "batch"), [(16, 0.25, 4, 4.0), (6, 2 / 3, 2, 4.0),
                                                           (10, 0.4, 3, 4.0), (3, 1.0, 1, 3.0)])
def test_plan_round_sample_rate_and_steps(n: int, q: float, per_epoch: int, batch: float) -> None:
    """q = min(1, expected batch / n); round(1/q) steps per epoch, halves rounded up (1/q = 2.5 gives 3)."""
    plan = plan_round(RunConfig.from_mapping({"record_dp.expected_batch": 4, "train.local_epochs": 2}), num_records=n)
    assert (plan.sample_rate, plan.steps_per_epoch, plan.steps, plan.expected_batch_size) == \
        (pytest.approx(q), per_epoch, 2 * per_epoch, batch)


@pytest.fixture(scope="module")
def model(tiny_data: tuple[Catalog, list[UserSplit]]) -> Iterator[Recommender]:
    """The process-cached model for CFG (the one the client app reuses), reset to its initial state afterwards."""
    model = build_model(CFG, tiny_data[0])
    initial = {k: v.numpy().copy() for k, v in trainable_state(model).items()}
    yield model
    load_trainable_state(model, initial)


def _busy(splits: list[UserSplit]) -> UserSplit:
    return max(splits, key=lambda s: len(s.train_items))


def _randomize(model: Recommender, seed: int = 0) -> None:
    """Random non-zero trainable state, so LoRA A and B, head and bias all get non-zero gradients."""
    rng = np.random.default_rng(seed)
    load_trainable_state(model, {k: v.numpy() + 0.05 * rng.standard_normal(v.shape).astype(np.float32)
                                 for k, v in trainable_state(model).items()})


def _snapshot(model: Recommender) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _trainable_names(model: Recommender) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def _hook_count(model: Recommender) -> int:
    return sum(len(m._forward_hooks) + len(m._backward_hooks) for m in model.modules())


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
@pytest.mark.parametrize("backbone", ["minilm", "tiny-llama"])
def test_grad_sample_equals_per_example_autograd(backbone: str, model: Recommender, tiny_data,
                                                 tiny_llama_dir: Path) -> None:
    """Opacus' per-sample gradients of a padded 3-example batch equal each example's own autograd gradient, for
    the encoder (mean pooling) and a decoder (last-token pooling)."""
    # Prepare: frozen layers in eval mode (no dropout), trainable layers in train mode (Opacus hooks need it)
    catalog, splits = tiny_data
    if backbone == "tiny-llama":
        model = build_model(CFG.updated({"model.name": str(tiny_llama_dir)}), catalog, cached=False)
    _randomize(model)
    model.eval()
    for m in model.modules():
        if any(p.requires_grad for p in m.parameters(recurse=False)):
            m.train()
    prompts, targets, hists = draw_examples(_busy(splits), catalog, buckets=8, order="weight",
                                            rng=np.random.default_rng(0))
    batch = make_batch(model.backbone.tokenizer, prompts[:3], targets[:3], hists[:3], CFG.model.history_tokens)
    assert (batch.attention_mask == 0).any(), "the batch must contain padding"
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    # Execute
    gsm = GradSampleModule(model, batch_first=True, loss_reduction="mean", strict=True)
    try:
        example_loss(model, batch.input_ids, batch.attention_mask, batch.target, batch.history).backward()
        samples = {n: p.grad_sample.detach().clone() for n, p in trainable.items()}
        frozen_with_samples = [n for n, p in model.named_parameters()
                               if not p.requires_grad and getattr(p, "grad_sample", None) is not None]
    finally:
        gsm.to_standard_module()
        model.zero_grad(set_to_none=True)
    worst = 0.0
    for i in range(3):
        rows = slice(i, i + 1)
        loss = example_loss(model, batch.input_ids[rows], batch.attention_mask[rows], batch.target[rows],
                            batch.history[rows])
        for (name, p), ref in zip(trainable.items(), torch.autograd.grad(loss, list(trainable.values())),
                                  strict=True):
            assert samples[name].shape == (3, *p.shape), name
            worst = max(worst, float((samples[name][i] - ref).abs().max() / ref.abs().max()))
    model.eval()
    # Assert: every trainable tensor (LoRA A/B, head, item bias) is covered, frozen ones get no samples
    assert any(".lora_A." in n for n in samples) and "head.weight" in samples and "item_bias.weight" in samples
    assert frozen_with_samples == []
    assert worst < 1e-4, f"max relative error {worst:.2e}"


def test_first_private_step_moves_trainable_and_keeps_frozen_weights(model: Recommender, tiny_data) -> None:
    """One DP-SGD step (q = 1): every trainable tensor changes, every frozen tensor and the table are bit-identical."""
    # Prepare
    catalog, splits = tiny_data
    cfg = CFG.updated({"record_dp.expected_batch": 8})  # n <= 8 examples: q = 1, one step
    _randomize(model)
    before = _snapshot(model)
    ledger = new_record_ledger(subject="device-test")
    # Execute
    stats = train_local_private(model, _busy(splits), catalog, cfg, seed=0, ledger=ledger, server_round=1,
                                noise_seed=0)
    # Assert
    after = model.state_dict()
    trainable = _trainable_names(model)
    assert stats.steps == 1 and stats.sample_rate == 1.0 and stats.empty_steps == 0
    assert sorted(n for n in trainable if torch.equal(after[n], before[n])) == []
    assert sorted(n for n in before if n not in trainable and not torch.equal(after[n], before[n])) == []
    assert [e.metadata["steps"] for e in ledger] == [1]


def test_update_check_refuses_when_weights_do_not_move(model: Recommender) -> None:
    """The opacus#820 guard: a 'step' that leaves the trainable weights unchanged is an error, not a quiet round."""
    # Prepare
    check = dp_sgd._UpdateCheck(model, make_optimizer(model, CFG))  # type: ignore[arg-type]
    # Execute / Assert: nothing stepped, so nothing moved
    with pytest.raises(DpSgdError, match=r"trainable tensors did not change.*opacus#820"):
        check.verify()


def test_update_check_catches_a_frozen_weight_changed_in_place(model: Recommender) -> None:
    """Frozen tensors are fingerprinted, not copied: an in-place change (even through a view) is still caught."""
    # Prepare
    check = dp_sgd._UpdateCheck(model, make_optimizer(model, CFG))  # type: ignore[arg-type]
    trainable = [p for p in model.parameters() if p.requires_grad]
    frozen = next(p for p in model.parameters() if not p.requires_grad)
    # Execute: move every trainable tensor (a real step would), and nudge one frozen tensor through a view
    with torch.no_grad():
        for p in trainable:
            p.add_(1.0)
        frozen.view(-1)[:1].add_(0.0)  # same value, but written in place: the check cannot know it is harmless
    # Assert
    with pytest.raises(DpSgdError, match=r"1 frozen tensors did"):
        check.verify()
    with torch.no_grad():
        for p in trainable:
            p.sub_(1.0)


def test_empty_poisson_batch_still_adds_noise_and_counts(model: Recommender, tiny_data,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """With every Poisson sample empty, each step still adds noise, moves the weights and is charged."""
    # Prepare
    catalog, splits = tiny_data
    monkeypatch.setattr(dp_sgd, "poisson_sample", lambda n, q, *, generator: [])
    _randomize(model)
    before = _snapshot(model)
    ledger = new_record_ledger(subject="device-test")
    # Execute
    stats = train_local_private(model, _busy(splits), catalog, CFG, seed=0, ledger=ledger, server_round=3,
                                noise_seed=1)
    # Assert
    plan = plan_round(CFG, num_records=stats.records)
    after = model.state_dict()
    trainable = _trainable_names(model)
    assert plan.steps >= 2 and stats.steps == stats.empty_steps == plan.steps and stats.tokens == 0
    assert sorted(n for n in trainable if torch.equal(after[n], before[n])) == []
    assert all(torch.equal(after[n], before[n]) for n in before if n not in trainable)
    (entry,) = ledger.entries
    assert (entry.round, entry.metadata["steps"], entry.metadata["sample_rate"]) == (3, plan.steps, plan.sample_rate)


def test_epsilon_over_rounds_equals_one_accountant_and_survives_restart(model: Recommender, tiny_data) -> None:
    """Three rounds on one device, its ledger stored in context.state as JSON and reloaded in a fresh Context each
    round (a restart): epsilon is that of one Opacus accountant fed every step of every round, never one round's."""
    # Prepare: the device's history grows between rounds 2 and 5; q must not change (it runs over K fixed slots)
    catalog, splits = tiny_data
    _randomize(model)
    by_size = sorted(splits, key=lambda s: len(s.train_items))
    rounds = [(1, by_size[0]), (2, by_size[0]), (5, by_size[-1])]
    stored: RecordDict = RecordDict()
    reference = RDPAccountant()
    epsilons, per_round = [], []
    for server_round, split in rounds:
        # Execute: a new process each round sees only what context.state held
        context = Context(run_id=1, node_id=7, node_config={"partition-id": 0}, state=stored, run_config={})
        ledger = load_record_ledger(context, subject="partition-0")
        stats = train_local_private(model, split, catalog, CFG, seed=server_round, ledger=ledger,
                                    server_round=server_round, noise_seed=server_round)
        save_record_ledger(context, ledger)
        stored = RecordDict({PRIVACY_STATE: ConfigRecord(
            {RECORD_LEDGER_KEY: str(context.state[PRIVACY_STATE][RECORD_LEDGER_KEY])})})
        for _ in range(stats.steps):
            reference.step(noise_multiplier=CFG.record_dp.noise_multiplier, sample_rate=stats.sample_rate)
        epsilons.append(stats.epsilon)
        per_round.append(make_accountant("opacus-rdp").epsilon([ledger.events()[-1]], delta=CFG.record_dp.delta))
    # Assert
    final = load_record_ledger(Context(run_id=1, node_id=7, node_config={"partition-id": 0}, state=stored,
                                       run_config={}), subject="partition-0")
    assert final == ledger and final.rounds() == [1, 2, 5]
    assert {e.metadata["sample_rate"] for e in final} == {plan_round(CFG).sample_rate}, "q must not depend on data"
    assert {e.metadata["num_records"] for e in final} == {CFG.train.examples_per_user}
    assert epsilons[-1] == pytest.approx(reference.get_epsilon(CFG.record_dp.delta), rel=1e-9)
    assert epsilons[0] < epsilons[1] < epsilons[2] and epsilons[2] > max(per_round)
    prv = CFG.updated({"record_dp.accountant": "prv"})
    assert 0 < record_epsilon(final, prv) < epsilons[-1]  # PRV is the tighter one
    with pytest.raises(ValueError, match="expected the record-level ledger of 'partition-3'"):
        load_record_ledger(Context(run_id=1, node_id=7, node_config={}, state=stored, run_config={}),
                           subject="partition-3")


def _train_message(cfg: RunConfig, model: Recommender, server_round: int) -> Message:
    state = {k: v.numpy() for k, v in trainable_state(model).items()}
    config = ConfigRecord({**cfg.to_flat(), "server-round": server_round, "seed": 0})
    # Explicit metadata: Message(content, dst_node_id, message_type) needs a running Flower task's identity.
    meta = Metadata(run_id=1, message_id=f"train-{server_round}", src_node_id=1, dst_node_id=7,
                    reply_to_message_id="", group_id=str(server_round), created_at=time.time(), ttl=3600.0,
                    message_type=MessageType.TRAIN)
    return Message(RecordDict({"arrays": state_to_record(state), "config": config}), metadata=meta)


def test_train_handler_declines_over_budget_without_charging(model: Recommender) -> None:
    """With a budget that fits one round but not two, the handler trains once, then declines: no arrays,
    declined = 1, record-epsilon = the epsilon so far, and the stored ledger is unchanged."""
    # Prepare: the budget sits between the epsilon of one and of two rounds of this device
    partition, num_partitions = 4, 20
    fed = load_federation(CFG)
    event = plan_round(CFG).event()  # over the K fixed slots, whatever the device's history
    acc = make_accountant("opacus-rdp")
    eps1, eps2 = (acc.epsilon([event] * k, delta=CFG.record_dp.delta) for k in (1, 2))
    cfg = CFG.updated({"record_dp.epsilon_max": (eps1 + eps2) / 2})
    assert build_model(cfg, fed.catalog) is model  # the handler trains the module's cached model
    context = Context(run_id=1, node_id=7, node_config={"partition-id": partition, "num-partitions": num_partitions},
                      state=RecordDict(), run_config={})
    # Execute
    first = client_train(_train_message(cfg, model, 1), context)
    stored_after_first = str(context.state[PRIVACY_STATE][RECORD_LEDGER_KEY])
    second = client_train(_train_message(cfg, model, 2), context)
    # Assert
    assert "arrays" in first.content and first.content["metrics"]["record-epsilon"] == pytest.approx(eps1)
    assert "arrays" not in second.content
    assert second.content["metrics"]["declined"] == 1
    assert second.content["metrics"]["record-epsilon"] == pytest.approx(eps1)
    assert str(context.state[PRIVACY_STATE][RECORD_LEDGER_KEY]) == stored_after_first
    assert len(PrivacyLedger.loads(stored_after_first)) == 1


def test_consecutive_rounds_on_the_cached_model_do_not_stack_hooks(model: Recommender, tiny_data,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Two private rounds on the same cached model see the same hooks while training and none afterwards; a round
    that fails half-way unhooks the model too."""
    # Prepare: count the hooks each time a Poisson sample is drawn (inside training)
    catalog, splits = tiny_data
    baseline = _hook_count(model)
    during: list[int] = []
    real: Callable[..., list[int]] = dp_sgd.poisson_sample

    def spy(n: int, q: float, *, generator: torch.Generator) -> list[int]:
        during.append(_hook_count(model))
        return real(n, q, generator=generator)

    monkeypatch.setattr(dp_sgd, "poisson_sample", spy)
    ledger = new_record_ledger(subject="device-test")
    after = []
    # Execute
    for server_round in (1, 2):
        train_local_private(model, _busy(splits), catalog, CFG, seed=server_round, ledger=ledger,
                            server_round=server_round, noise_seed=server_round)
        after.append(_hook_count(model))
    monkeypatch.setattr(dp_sgd, "poisson_sample", lambda n, q, *, generator: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        train_local_private(model, _busy(splits), catalog, CFG, seed=3, ledger=ledger, server_round=3, noise_seed=3)
    # Assert
    assert baseline == 0 and after == [0, 0] and _hook_count(model) == 0
    assert len(set(during)) == 1 and during[0] > 0
    assert not any(hasattr(p, a) for p in model.parameters() for a in OPACUS_ATTRS)
    assert len(ledger) == 2  # the failed round was not charged (it released nothing)


def _device_context(node_config: dict) -> Context:
    """A freshly started device: empty context.state, so only its state directory can remember anything."""
    return Context(run_id=1, node_id=7, node_config=node_config, state=RecordDict(), run_config={})


def test_restarted_device_keeps_its_ledger_and_signs_a_report_that_verifies(model: Recommender,
                                                                            tmp_path: Path) -> None:
    """A device with a state directory trains in round 1, restarts (empty context.state), trains in round 3: its
    ledger holds both rounds, its epsilon is that of both, only non-data metrics leave it, and its signed report
    passes `audit verify` against the device's public key."""
    # Prepare
    state_dir = tmp_path / "device"
    node = {"partition-id": 4, "num-partitions": 20, "state-dir": str(state_dir)}
    two_rounds = make_accountant("opacus-rdp").epsilon([plan_round(CFG).event()] * 2, delta=CFG.record_dp.delta)
    # Execute
    replies = [client_train(_train_message(CFG, model, r), _device_context(node)) for r in (1, 3)]
    # Assert
    ledger = PrivacyLedger.load(state_dir / "record-ledger.json")
    assert ledger.rounds() == [1, 3] and ledger.subject == "partition-4"
    metrics = replies[1].content["metrics"]
    assert metrics["record-epsilon"] == pytest.approx(two_rounds, rel=1e-9)
    assert set(metrics.keys()) == {"record-epsilon"}  # no per-client telemetry under a privacy setting
    public_key = load_public_key(state_dir / "device-ed25519.pem.pub")
    findings = verify_report_file(state_dir / "privacy-report.json", public_key=public_key)
    assert not has_failures(findings), [f for f in findings if f.status == "fail"]
    report = read_report(state_dir / "privacy-report.json")
    assert report["device_id"] == "partition-4"
    assert report["record_level"]["accounting"]["epsilon"] == pytest.approx(two_rounds)
    assert (state_dir / "privacy-report.md").read_text().startswith("# ")
    assert "unsigned" not in (state_dir / "privacy-report.md").read_text()  # rendered from the signed report
    assert (state_dir / "adapter.safetensors").is_file()  # a real device keeps the global adapter for offline use


def test_device_budget_in_its_node_config_caps_a_laxer_run_setting(model: Recommender, tmp_path: Path) -> None:
    """The server cannot raise a device's budget: the device's own record-epsilon-max (node config) wins over a run
    setting of no budget, so the second round is declined and nothing more is charged."""
    # Prepare
    acc = make_accountant("opacus-rdp")
    eps1, eps2 = (acc.epsilon([plan_round(CFG).event()] * k, delta=CFG.record_dp.delta) for k in (1, 2))
    node = {"partition-id": 4, "num-partitions": 20, "state-dir": str(tmp_path / "device"),
            "record-epsilon-max": (eps1 + eps2) / 2}
    assert CFG.record_dp.epsilon_max == 0
    # Execute
    first = client_train(_train_message(CFG, model, 1), _device_context(node))
    second = client_train(_train_message(CFG, model, 2), _device_context(node))
    # Assert
    assert "arrays" in first.content and "arrays" not in second.content
    assert second.content["metrics"]["declined"] == 1
    assert PrivacyLedger.load(tmp_path / "device" / "record-ledger.json").rounds() == [1]


def test_server_proposed_state_root_is_used_only_without_the_devices_own(tmp_path: Path) -> None:
    """Simulated devices live under the root the server proposes; a deployed device's own state-dir always wins."""
    own = {"state-dir": str(tmp_path / "mine")}
    assert resolve_state_dir(own, str(tmp_path / "run"), device="partition-2") == tmp_path / "mine"
    assert resolve_state_dir({}, str(tmp_path / "run"), device="partition-2") == tmp_path / "run" / "partition-2"
    assert resolve_state_dir({}, "", device="partition-2") is None
