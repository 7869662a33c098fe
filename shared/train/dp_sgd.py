"""Record-level DP on the device: Opacus DP-SGD over one user's bucketed examples, accounted in a ledger.

Why examples: `fedrec.shared.train.examples` hashes each listening record into one of K = `examples_per_user` buckets
and makes one example per non-empty bucket, so clipping per example bounds what any single record can contribute
to a step. The accountant's unit is one *slot*: the K buckets are K fixed slots, an empty bucket is a slot whose
example is empty (it contributes nothing when sampled). Sampling runs over the K slots, so n = K, q and the step
count are the same for every device and every round whatever its history: they reveal nothing about the data
and do not change when a record is added or removed. Changing one record changes one slot's example.

One round on a device (`train_local_private`):

1. Draw `local_epochs` epochs of examples exactly as `train_local` does (targets redrawn per epoch).
2. Plan the round over the K slots: q = min(1, record_expected_batch / K), round(1/q) steps per epoch (as
   Opacus' DPDataLoader with sample_rate = 1/len(loader)), so the round's DpEvent is known before any data is read.
3. If a budget is set, refuse the round (`PrivacyBudgetExceeded`) when the ledger plus the planned event would
   exceed `record_epsilon_max`; nothing is trained and nothing is recorded.
4. Wrap the cached model in `opacus.GradSampleModule` (hooks) and the usual `make_optimizer` Adam in a
   `DPOptimizer`. Each step Poisson-samples slots (each independently with probability q), keeps the sampled
   slots that hold an example, and takes a noisy step, *also when that batch is empty*: skipping an empty batch
   would be an unaccounted deviation from the analysed mechanism, and would make the step count observable.
5. After the first step, check that every trainable tensor moved and no frozen one did (opacus#820).
6. Unhook the model (it is reused by later rounds) and append the round's steps to the device ledger.

Assumptions of the accounting, stated so a report can repeat them: K (hence q and the step count) is a public
setting, not a property of the data (Opacus instead treats its data-dependent dataset size as public); the
Poisson sampling and the noise come from a `torch.Generator` (Mersenne Twister) seeded from `secrets` each round:
not a CSPRNG, no floating-point hardening
(Opacus' `secure_mode` needs torchcsprng, which does not exist for torch >= 2.6).
"""

from __future__ import annotations

import math
import secrets
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from dp_accounting import dp_event

from fedrec.shared.config import RunConfig
from fedrec.shared.data.split import UserSplit
from fedrec.shared.data.types import Catalog
from fedrec.shared.model.recommender import Recommender
from fedrec.shared.privacy import PrivacyBudget, PrivacyLedger, dpsgd_event, make_accountant
from fedrec.shared.privacy.canaries import RecordCanary, canary_examples, record_slots
from fedrec.shared.train.examples import batch_of, bucket_of, draw_epochs
from fedrec.shared.train.local import LossMeter, TrainStats, example_loss, make_optimizer

if TYPE_CHECKING:  # Opacus is imported when a private round runs, so a non-DP client never pays for it
    from opacus.optimizers import DPOptimizer

#: `record_accountant` setting -> the registered Opacus accountant that computes the device's own figure.
OPACUS_ACCOUNTANTS = {"prv": "opacus-prv", "rdp": "opacus-rdp"}

#: Where the noise and the Poisson sampling come from (for `Mechanism.dp_sgd(rng=...)` in device reports).
NOISE_RNG = ("torch.Generator (Mersenne Twister) seeded per round from secrets.randbits(63); "
             "not a CSPRNG, no floating-point hardening")


class DpSgdError(RuntimeError):
    """DP-SGD did not do what the accounting assumes (e.g. LoRA weights did not move: opacus#820)."""


@dataclass(frozen=True, kw_only=True)
class DpSgdPlan:
    """One round of DP-SGD on one device, fixed before training so the budget can be checked first."""

    num_records: int  # n = K slots (examples-per-user), empty ones included: the accountant's population
    sample_rate: float  # q = min(1, expected batch / n)
    expected_batch_size: float  # q * n: the denominator of the mean gradient (Opacus' expected_batch_size)
    steps_per_epoch: int  # round(1 / q), at least 1
    steps: int  # every step of the round, empty Poisson batches included
    noise_multiplier: float
    max_grad_norm: float

    def event(self) -> dp_event.DpEvent:
        """The DpEvent the round releases: SelfComposed(PoissonSampled(q, Gaussian(z)), steps)."""
        return dpsgd_event(noise_multiplier=self.noise_multiplier, sample_rate=self.sample_rate, steps=self.steps)


def plan_round(cfg: RunConfig, *, num_records: int | None = None) -> DpSgdPlan:
    """The round's q and step count over `num_records` slots (default: the K = examples-per-user slots, plus
    one audit slot on every device when the run has record canaries: `fedrec.shared.privacy.canaries.record_slots`)."""
    if num_records is None:
        num_records = record_slots(cfg)
    if num_records < 1:
        raise ValueError(f"num_records: a device needs at least one example to train, found {num_records}")
    q = min(1.0, cfg.record_dp.expected_batch / num_records)
    per_epoch = max(1, math.floor(1.0 / q + 0.5))  # round half up (Python's round() would round 2.5 to 2)
    return DpSgdPlan(num_records=num_records, sample_rate=q,
                     expected_batch_size=float(min(cfg.record_dp.expected_batch, num_records)),  # = q * n, exactly
                     steps_per_epoch=per_epoch, steps=per_epoch * cfg.train.local_epochs,
                     noise_multiplier=cfg.record_dp.noise_multiplier, max_grad_norm=cfg.record_dp.max_grad_norm)


def new_record_ledger(*, subject: str = "") -> PrivacyLedger:
    """An empty record-level ledger for one device (it must persist across rounds: never start a new one)."""
    return PrivacyLedger(guarantee="record-level", subject=subject)


def record_epsilon(ledger: PrivacyLedger, cfg: RunConfig) -> float:
    """The device's cumulative epsilon at `record_delta` over its whole ledger, by the Opacus accountant chosen."""
    acc = make_accountant(OPACUS_ACCOUNTANTS[cfg.record_dp.accountant], adjacency=ledger.adjacency)
    return acc.epsilon(ledger.events(), delta=cfg.record_dp.delta)


def record_budget(cfg: RunConfig) -> PrivacyBudget | None:
    """The device budget, or None when `record_epsilon_max` is 0 (no budget)."""
    if cfg.record_dp.epsilon_max <= 0:
        return None
    return PrivacyBudget(epsilon_max=cfg.record_dp.epsilon_max, delta=cfg.record_dp.delta,
                         accountant=OPACUS_ACCOUNTANTS[cfg.record_dp.accountant])


@dataclass
class DpTrainStats(TrainStats):
    """`TrainStats` plus what the ledger was charged; `steps` counts every step, empty batches included."""

    records: int  # n, as in the ledger entry
    sample_rate: float
    empty_steps: int  # steps whose Poisson sample was empty (noise-only steps)
    epsilon: float  # the device's cumulative epsilon after this round (record_delta, record_accountant)


def train_local_private(
    model: Recommender,
    split: UserSplit,
    catalog: Catalog,
    cfg: RunConfig,
    *,
    seed: int,
    ledger: PrivacyLedger,
    server_round: int,
    run: str = "",
    noise_seed: int | None = None,
    canaries: Sequence[RecordCanary] = (),
) -> DpTrainStats:
    """`local_epochs` epochs of DP-SGD on one user's examples; the round is appended to `ledger` as release
    (`run`, `server_round`, 0): a device's lifetime ledger keys its entries by run.

    `seed` draws the examples (the same draw as `train_local`) and seeds dropout. `noise_seed` seeds the Poisson
    sampling and the noise; leave it None (what the client does) to draw it from the OS CSPRNG so that neither
    can be replayed by anyone who knows the run's seeds. Tests pass an int for determinism.

    `canaries`: the audit canaries this device hosts (`fedrec.shared.privacy.canaries`); each fills one audit slot after
    the K history slots, as one more example.

    Raises `PrivacyBudgetExceeded` before touching the model if the round would exceed `record_epsilon_max`
    (the ledger is unchanged), and `DpSgdError` if the first step does not move the trainable weights.
    """
    from opacus import GradSampleModule
    from opacus.optimizers import DPOptimizer

    if cfg.model.item_tower != "frozen":
        raise ValueError(f"record-level DP-SGD supports item-tower 'frozen' only, found {cfg.model.item_tower!r}")
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    epochs = draw_epochs(split, catalog, cfg, rng)
    plan = plan_round(cfg)  # over the K fixed slots: q and the step count do not depend on the history
    if len(canaries) > plan.num_records - cfg.train.examples_per_user:
        raise ValueError(f"{len(canaries)} audit canaries but {plan.num_records - cfg.train.examples_per_user} audit "
                         "slots on this device (audit-canaries must be > 0, and a device hosts at most one)")
    extra = canary_examples(canaries, catalog, cfg)
    ledger.check_next(run=run, round=server_round)  # a release the ledger already holds is never trained again
    budget = record_budget(cfg)
    if budget is not None:
        budget.check(ledger, plan.event())  # raises PrivacyBudgetExceeded; nothing trained, nothing recorded

    device = model.catalog.device
    sampling = torch.Generator().manual_seed(secrets.randbits(63) if noise_seed is None else noise_seed)
    noise = torch.Generator(device=device).manual_seed(secrets.randbits(63) if noise_seed is None else noise_seed + 1)
    meter, empty = LossMeter(), 0
    model.train()
    gsm = GradSampleModule(model, batch_first=True, loss_reduction="mean", strict=True)  # hooks on model's layers
    try:
        opt = DPOptimizer(make_optimizer(model, cfg), noise_multiplier=plan.noise_multiplier,
                          max_grad_norm=plan.max_grad_norm, expected_batch_size=plan.expected_batch_size,
                          loss_reduction="mean", generator=noise)
        check = _UpdateCheck(model, opt)
        for prompts, targets, hists in epochs:
            # slot -> example: an example's target lies in its bucket, so the target's bucket is the slot
            example_in = {bucket_of(catalog.item_ids[t], cfg.train.examples_per_user): i for i, t in enumerate(targets)}
            if len(example_in) != len(targets):
                raise DpSgdError("two examples in one slot: the examples' buckets must be the DP-SGD slots")
            # audit canaries fill the slots after the K history slots (an audit slot without one stays empty)
            example_in.update({cfg.train.examples_per_user + j: len(targets) + j for j in range(len(canaries))})
            epoch = (prompts + extra[0], targets + extra[1], hists + extra[2])
            for _ in range(plan.steps_per_epoch):
                slots = poisson_sample(plan.num_records, plan.sample_rate, generator=sampling)
                sel = [example_in[s] for s in slots if s in example_in]  # an empty slot adds nothing
                opt.zero_grad(set_to_none=True)
                if sel:
                    batch = batch_of(epoch, sel, model.backbone.tokenizer, cfg.model.history_tokens, device)
                    # The hooks sit on model's own layers, so calling model (as example_loss does) is the
                    # same as calling gsm. Mean over the real batch; DPOptimizer rescales to the expected one.
                    loss = example_loss(model, batch.input_ids, batch.attention_mask, batch.target, batch.history)
                    with warnings.catch_warnings():
                        # Benign (feasibility notes 3.3): the first layers' inputs are token embeddings that need
                        # no gradient; Opacus reads grad_output only (tests/test_dp_sgd.py checks the samples).
                        warnings.filterwarnings("ignore", message="Full backward hook is firing")
                        loss.backward()
                    meter.add(loss, batch)
                else:
                    _empty_grad_samples(opt)
                    empty += 1
                opt.step()  # clip, sum, add N(0, (zC)^2), divide by q*n, Adam
                meter.steps += 1
                if check is not None:
                    check.verify()
                    check = None
        opt.zero_grad(set_to_none=True)
    finally:
        gsm.to_standard_module()  # removes the hooks and grad_sample attributes: the cached model is reused
        for p in model.parameters():
            if hasattr(p, "summed_grad"):
                del p.summed_grad  # set by DPOptimizer; left behind it would outlive the round
        model.eval()
    if meter.steps != plan.steps:  # cannot happen by construction; the ledger must never under-count
        raise DpSgdError(f"ran {meter.steps} DP-SGD steps, planned {plan.steps}")
    ledger.record_local_dpsgd(round=server_round, run=run, noise_multiplier=plan.noise_multiplier,
                              sample_rate=plan.sample_rate, steps=meter.steps, max_grad_norm=plan.max_grad_norm,
                              num_records=plan.num_records, expected_batch_size=plan.expected_batch_size,
                              epochs=cfg.train.local_epochs)
    base = meter.stats(sum(len(e[0]) for e in epochs))
    return DpTrainStats(examples=base.examples, steps=base.steps, loss=base.loss, seconds=base.seconds,
                        tokens=base.tokens, records=plan.num_records,
                        sample_rate=plan.sample_rate, empty_steps=empty, epsilon=record_epsilon(ledger, cfg))


def poisson_sample(n: int, q: float, *, generator: torch.Generator) -> list[int]:
    """Indices of one Poisson sample: each of the n examples kept independently with probability q (may be [])."""
    return (torch.rand(n, generator=generator) < q).nonzero().flatten().tolist()


def _empty_grad_samples(opt: DPOptimizer) -> None:
    """What the hooks would store for a zero-row batch: per-sample gradients with 0 rows, for every parameter.

    HF attention cannot run a 0-row batch (`view(0, T, -1, h)` is ambiguous), so the forward/backward is not
    run; DPOptimizer handles 0 rows (clip factor of shape (0,), summed gradient 0) and then adds noise, scales
    and steps as for any other batch, which is the step the accountant counts.
    """
    for p in opt.params:
        p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype, device=p.device)


class _UpdateCheck:
    """Snapshot before the first step; `verify` after it (opacus#820: LoRA silently not updating under DP-SGD).

    Every trainable tensor in a group with a positive learning rate must have changed (noise alone moves it) and
    every frozen parameter must be untouched. Trainable tensors are small (the adapter) and are copied. Frozen ones
    (about 90 MB for MiniLM) are not: a frozen tensor can only change in place or by swapping its storage, and
    both show, exactly, in its version counter (bumped by every in-place op on it or on any view of it) or its
    data pointer. Copying and comparing them cost ~8% of a private round on one device.
    """

    def __init__(self, model: Recommender, opt: DPOptimizer) -> None:
        moving = {id(p) for g in opt.param_groups if g["lr"] > 0 for p in g["params"]}
        self._model = model
        self._moving = {n: p.detach().clone() for n, p in model.named_parameters() if id(p) in moving}
        self._frozen = {n: _fingerprint(p) for n, p in model.named_parameters() if not p.requires_grad}

    def verify(self) -> None:
        params = dict(self._model.named_parameters())
        stuck = [n for n, before in self._moving.items() if torch.equal(params[n].detach(), before)]
        moved = [n for n, before in self._frozen.items() if _fingerprint(params[n]) != before]
        if stuck or moved:
            raise DpSgdError(
                f"after the first DP-SGD step {len(stuck)} trainable tensors did not change (e.g. {stuck[:3]}) and "
                f"{len(moved)} frozen tensors did (e.g. {moved[:3]}); the optimizer does not hold the model's "
                "parameters (opacus#820: move the model to its device before attaching LoRA). Refusing to train.")


def _fingerprint(p: torch.Tensor) -> tuple[int, int]:
    """(version counter, data pointer): changes whenever the tensor's values can have changed."""
    return p._version, p.data_ptr()
