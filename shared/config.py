"""Every setting of a run, in one typed, validated place.

The defaults here are the embedded defaults of `fedrec simulate` and of `flwr run .`; `pyproject.toml`'s
`[tool.flwr.app.config]` lists the same keys in kebab-case. Keys are kebab-case on the command line and in
TOML (`local-epochs`), snake_case in Python (`local_epochs`). Unknown keys are an error, never ignored.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any


class ConfigError(ValueError):
    """A setting is unknown or out of range; the message names the source, the key and the value."""


@dataclass(frozen=True)
class RunConfig:
    """Settings of one federated run.

    Args:
        data: Data set: `synthetic[:users=N,items=M,seed=S]`, a HetRec directory, or a file (.tsv Last.fm-1K,
            .jsonl ListenBrainz, .csv interactions).
        item_metadata: Optional item-metadata CSV (`item,name[,tags]`) for a CSV data set.
        max_users: Use only the first N users of the data set (0 = all), e.g. for a quick look at Last.fm-2K.
        model: `minilm` (bundled all-MiniLM-L6-v2) or a local Hugging Face model directory.
    """

    # data
    data: str = field(default="synthetic:users=200,items=600", metadata={"help": "data set spec or path"})
    item_metadata: str = field(default="", metadata={"help": "item metadata CSV for a CSV data set"})
    max_users: int = field(default=0, metadata={"help": "use the first N users only (0 = all)"})
    split_seed: int = field(default=0, metadata={"help": "seed of the per-user test/validation split"})
    min_interactions: int = field(default=5, metadata={"help": "users with fewer items train but are not evaluated"})
    # model
    model: str = field(default="minilm", metadata={"help": "'minilm' or a local HF model directory"})
    lora_rank: int = field(default=8, metadata={"help": "LoRA rank r"})
    lora_alpha: float = field(default=16.0, metadata={"help": "LoRA alpha (scaling = alpha / r)"})
    lora_targets: str = field(default="", metadata={"help": "comma-separated module names; empty = auto (q/v)"})
    head: bool = field(default=True, metadata={"help": "trainable d x d user-side projection"})
    item_bias: bool = field(default=True, metadata={"help": "trainable per-item bias"})
    temperature: float = field(default=0.05, metadata={"help": "softmax temperature on cosine scores"})
    history_tokens: int = field(default=64, metadata={"help": "token budget of the history prompt"})
    item_tokens: int = field(default=32, metadata={"help": "token budget of an item text"})
    history_order: str = field(default="weight", metadata={"help": "'weight' (most played first) or 'recent'"})
    prompt_tags: int = field(default=1, metadata={"help": "public tags shown after each artist in the prompt"})
    item_tower: str = field(
        default="frozen", metadata={"help": "'frozen' cached catalog table + full softmax, or 'shared-lora'"}
    )
    negatives: int = field(default=15, metadata={"help": "sampled negatives per example (shared-lora only)"})
    # local training
    local_epochs: int = field(default=1, metadata={"help": "passes over the client's examples per round"})
    learning_rate: float = field(default=3e-3, metadata={"help": "client Adam learning rate (LoRA, head)"})
    bias_learning_rate: float = field(
        default=50.0, metadata={"help": "client learning rate of the item bias (an SGD-like step)"}
    )
    batch_size: int = field(default=16, metadata={"help": "client batch size (examples)"})
    examples_per_user: int = field(
        default=16, metadata={"help": "fixed number of disjoint record buckets per user; one example per bucket"}
    )
    # record-level DP (on-device Opacus DP-SGD): the unit is one example, i.e. one record bucket (shared.dp_sgd)
    record_dp: bool = field(default=False, metadata={"help": "on-device DP-SGD (record-level DP) on/off"})
    record_noise_multiplier: float = field(
        default=1.0, metadata={"help": "z: per-step noise std is z * C on the sum of clipped per-example gradients"}
    )
    record_max_grad_norm: float = field(default=1.0, metadata={"help": "C: per-example gradient L2 clip norm"})
    record_target_epsilon: float = field(
        default=0.0, metadata={"help": "if > 0: calibrate z so record-target-rounds rounds reach this epsilon, and "
                                       "make it the device budget unless record-epsilon-max is set"}
    )
    record_target_rounds: int = field(
        default=1, metadata={"help": "rounds a device can train in within record-target-epsilon"}
    )
    record_expected_batch: int = field(
        default=4, metadata={"help": "expected Poisson batch; sample rate q = min(1, this / examples)"}
    )
    record_delta: float = field(
        default=1e-5, metadata={"help": "record-level delta; must be < 1 / examples-per-user"}
    )
    record_epsilon_max: float = field(
        default=0.0, metadata={"help": "a device declines a round that would exceed this (0 = no budget)"}
    )
    record_accountant: str = field(
        default="prv", metadata={"help": "Opacus accountant of the device's epsilon and budget: 'prv' or 'rdp'"}
    )
    dp_diagnostics: bool = field(
        default=False,
        metadata={"help": "under DP, devices also send loss, example and token counts in the clear (simulation only)"},
    )
    device_state_dir: str = field(
        default="",
        metadata={"help": "simulation: root of the devices' state dirs (default: <run-dir>/<run-name>/devices)"},
    )
    # federation
    deployment_nodes: int = field(
        default=0, metadata={"help": "0 = simulation (one node per user of data); N > 0 = a deployed federation of N "
                                     "devices, each with its own history, and data names only the public catalog"}
    )
    num_server_rounds: int = field(default=20, metadata={"help": "number of federated rounds"})
    clients_per_round: int = field(default=10, metadata={"help": "clients sampled per round"})
    fraction_train: float = field(
        default=0.0, metadata={"help": "sample this fraction of all clients per round instead (0 = use the count)"}
    )
    fraction_evaluate: float = field(default=1.0, metadata={"help": "fraction of evaluable clients evaluated"})
    fraction_evaluate_final: float = field(default=1.0, metadata={
        "help": "fraction evaluated after the last round (1 = every user, whatever fraction-evaluate is)"})
    evaluate_every: int = field(default=5, metadata={"help": "evaluate every k rounds (and after the last)"})
    aggregation_weights: str = field(default="equal", metadata={"help": "'equal' or 'examples'"})
    server_learning_rate: float = field(default=1.0, metadata={"help": "global += lr * mean(delta)"})
    seed: int = field(default=0, metadata={"help": "seed of client sampling and local training"})
    # user-level DP (DP-FedAvg): clip each client's whole delta to S, noise z*S on the sum
    user_dp: bool = field(default=False, metadata={"help": "user-level DP-FedAvg on/off"})
    user_noise_multiplier: float = field(default=1.0, metadata={"help": "z: noise std on the sum is z * S"})
    user_clip_norm: float = field(default=1.0, metadata={"help": "S: L2 bound on each client's whole adapter delta"})
    user_target_epsilon: float = field(
        default=0.0, metadata={"help": "if > 0: calibrate z so num-server-rounds releases reach this epsilon, and "
                                       "make it the user-level budget unless user-epsilon-max is set"}
    )
    client_sampling: str = field(
        default="fixed", metadata={"help": "'poisson' (rate C/N, amplification claimed) or 'fixed' (no amplification)"}
    )
    user_delta: float = field(default=0.0, metadata={"help": "user-level delta (0 = 1/N^1.1)"})
    user_epsilon_max: float = field(default=0.0, metadata={"help": "stop before a round would exceed this (0 = none)"})
    server_key: str = field(
        default="", metadata={"help": "Ed25519 key that signs run reports (default: <run-dir>/server-ed25519.pem)"}
    )
    # secure aggregation (SecAgg+, fedrec.shared.secagg; docs/secure-aggregation.md): the server sees only masked
    # uploads and the sum of the survivors' deltas, each clipped to user-clip-norm S (also without user-dp)
    secure_aggregation: bool = field(
        default=False, metadata={"help": "SecAgg+: the server only sees the sum of the clients' clipped deltas"}
    )
    secagg_neighbours: int = field(
        default=0, metadata={"help": "SecAgg+ graph degree k per client (0 = auto: 2 ceil(log2 n) + 2, at most n-1)"}
    )
    secagg_threshold_fraction: float = field(
        default=0.5, metadata={"help": "shares needed: t = max(strict majority, ceil(f * (k + 1))) of k + 1 holders"}
    )
    secagg_ring_bits: int = field(default=32, metadata={"help": "SecAgg+ ring Z_2^b for the encoded deltas: 32 or 64"})
    secagg_stage_timeout: float = field(
        default=0.0, metadata={"help": "seconds to wait for each SecAgg+ stage's replies (0 = wait for all)"}
    )
    # empirical privacy audit (fedrec.server.audit, docs/empirical-audit.md): canaries measured in the same run
    audit_canaries: int = field(
        default=0, metadata={"help": "record-level audit: m canary examples on users' devices, each in w.p. 1/2"}
    )
    audit_canary_clients: int = field(
        default=0, metadata={"help": "user-level audit: K extra canary clients that send random directions"}
    )
    audit_guess_fraction: float = field(
        default=0.1, metadata={"help": "the audit guesses 'in' for this fraction of canaries and 'out' for as many"}
    )
    audit_seed: int = field(
        default=0, metadata={"help": "0 = a secret audit seed; else fixed (tests only: anyone with the config can "
                                     "recompute which canaries are in)"}
    )
    # output
    run_dir: str = field(default="runs", metadata={"help": "parent folder of run directories"})
    run_name: str = field(default="", metadata={"help": "run directory name (default: timestamp)"})

    def __post_init__(self) -> None:
        def check(ok: bool, key: str, why: str) -> None:
            if not ok:
                raise ConfigError(f"{key.replace('_', '-')}: {why}, found {getattr(self, key)!r}")

        for key in ("lora_rank", "local_epochs", "batch_size", "examples_per_user", "num_server_rounds",
                    "clients_per_round", "evaluate_every", "history_tokens", "item_tokens"):
            check(getattr(self, key) >= 1, key, "must be >= 1")
        check(self.prompt_tags >= 0, "prompt_tags", "must be >= 0")
        check(self.max_users >= 0, "max_users", "must be >= 0")
        check(self.deployment_nodes >= 0, "deployment_nodes", "must be >= 0 (0 = simulation)")
        if self.deployment_nodes:  # canary clients are extra simulated partitions; a deployment has none
            check(self.audit_canary_clients == 0, "audit_canary_clients",
                  "must be 0 with deployment-nodes > 0 (canary clients are simulated nodes)")
        check(self.min_interactions >= 3, "min_interactions", "must be >= 3 (test + validation + train)")
        check(self.client_sampling in ("poisson", "fixed"), "client_sampling", "must be 'poisson' or 'fixed'")
        check(self.user_noise_multiplier > 0, "user_noise_multiplier", "must be > 0")
        check(self.user_clip_norm > 0, "user_clip_norm", "must be > 0")
        check(0.0 <= self.user_delta < 1.0, "user_delta", "must be in [0, 1)")
        check(self.user_epsilon_max >= 0, "user_epsilon_max", "must be >= 0")
        check(self.audit_canaries >= 0, "audit_canaries", "must be >= 0 (0 = no record-level audit)")
        check(self.audit_canary_clients >= 0, "audit_canary_clients", "must be >= 0 (0 = no user-level audit)")
        check(0.0 < self.audit_guess_fraction <= 0.5, "audit_guess_fraction", "must be in (0, 0.5]")
        check(self.audit_seed >= 0, "audit_seed", "must be >= 0 (0 = secret)")
        if self.record_dp and self.audit_canaries:  # every device then has K + 1 DP-SGD slots (one audit slot)
            check(self.record_delta < 1.0 / (self.examples_per_user + 1), "record_delta",
                  f"must be < 1 / (examples-per-user + 1) = {1.0 / (self.examples_per_user + 1):g} with record-dp "
                  "and audit-canaries")
        check(0.0 <= self.fraction_train <= 1.0, "fraction_train", "must be in [0, 1]")
        check(0.0 < self.fraction_evaluate <= 1.0, "fraction_evaluate", "must be in (0, 1]")
        check(0.0 < self.fraction_evaluate_final <= 1.0, "fraction_evaluate_final", "must be in (0, 1]")
        check(self.temperature > 0, "temperature", "must be > 0")
        check(self.learning_rate > 0, "learning_rate", "must be > 0")
        check(self.bias_learning_rate >= 0, "bias_learning_rate", "must be >= 0")
        check(self.server_learning_rate > 0, "server_learning_rate", "must be > 0")
        check(self.item_tower in ("frozen", "shared-lora"), "item_tower", "must be 'frozen' or 'shared-lora'")
        check(self.negatives >= 1, "negatives", "must be >= 1")
        check(self.history_order in ("weight", "recent"), "history_order", "must be 'weight' or 'recent'")
        check(self.aggregation_weights in ("equal", "examples"), "aggregation_weights", "must be 'equal' or 'examples'")
        # record-level DP: z = 0 would be non-private (and Opacus' accountants refuse it)
        check(self.record_noise_multiplier > 0, "record_noise_multiplier", "must be > 0")
        check(self.record_max_grad_norm > 0, "record_max_grad_norm", "must be > 0")
        check(self.record_expected_batch >= 1, "record_expected_batch", "must be >= 1")
        check(0.0 < self.record_delta < 1.0, "record_delta", "must be in (0, 1)")
        check(self.record_epsilon_max >= 0, "record_epsilon_max", "must be >= 0 (0 = no budget)")
        check(self.record_target_epsilon >= 0, "record_target_epsilon", "must be >= 0 (0 = use the noise multiplier)")
        check(self.record_target_rounds >= 1, "record_target_rounds", "must be >= 1")
        check(self.user_target_epsilon >= 0, "user_target_epsilon", "must be >= 0 (0 = use the noise multiplier)")
        check(self.record_accountant in ("prv", "rdp"), "record_accountant", "must be 'prv' or 'rdp'")
        check(self.secagg_neighbours >= 0, "secagg_neighbours", "must be >= 0 (0 = auto)")
        check(0.5 <= self.secagg_threshold_fraction <= 1.0, "secagg_threshold_fraction",
              "must be in [0.5, 1] (t is at least a strict majority of the share holders)")
        check(self.secagg_ring_bits in (32, 64), "secagg_ring_bits", "must be 32 or 64")
        check(self.secagg_stage_timeout >= 0, "secagg_stage_timeout", "must be >= 0 (0 = wait for every reply)")
        if self.secure_aggregation:
            check(self.aggregation_weights == "equal", "aggregation_weights",
                  "must be 'equal' with secure-aggregation (the server only sees an unweighted sum)")
        if self.record_dp or self.user_dp:
            check(self.aggregation_weights == "equal", "aggregation_weights",
                  "must be 'equal' with record-dp or user-dp (example counts would travel in the clear, and "
                  "DP-FedAvg's sensitivity assumes equal weights)")
        if self.record_dp:
            # A device has at most examples-per-user examples, so this keeps delta < 1/n on every device.
            check(self.record_delta < 1.0 / self.examples_per_user, "record_delta",
                  f"must be < 1 / examples-per-user = {1.0 / self.examples_per_user:g} with record-dp")
            # Only the frozen catalog tower's per-example path (and its empty-batch step) is verified under DP-SGD.
            check(self.item_tower == "frozen", "item_tower", "must be 'frozen' with record-dp")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], source: str = "config") -> RunConfig:
        """Build from kebab- or snake-case keys (Flower run_config, CLI overrides); unknown keys are errors."""
        known = {f.name: f for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for raw_key, value in values.items():
            key = raw_key.replace("-", "_")
            if key not in known:
                raise ConfigError(f"{source}: unknown setting {raw_key!r}; known: {', '.join(sorted(known))}")
            kwargs[key] = _coerce(known[key], value, source, raw_key)
        try:
            return cls(**kwargs)
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None

    def to_flwr(self) -> dict[str, Any]:
        """kebab-case dict of plain values (what a Flower ConfigRecord / run_config carries)."""
        return {k.replace("_", "-"): v for k, v in dataclasses.asdict(self).items()}

    def clients_sampled(self, population: int) -> int:
        """Clients asked to train each round: a fraction of the population if set, else the count."""
        k = round(self.fraction_train * population) if self.fraction_train > 0 else self.clients_per_round
        return max(1, min(k, population))

    def replace(self, **changes: Any) -> RunConfig:
        return dataclasses.replace(self, **changes)

    @property
    def lora_target_list(self) -> list[str] | None:
        return [t.strip() for t in self.lora_targets.split(",") if t.strip()] or None


def _coerce(f: dataclasses.Field, value: Any, source: str, key: str) -> Any:
    kind = f.type if isinstance(f.type, type) else {"int": int, "float": float, "bool": bool, "str": str}[f.type]
    try:
        if kind is bool:
            if isinstance(value, str):
                low = value.strip().lower()
                if low not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                return low in ("true", "1", "yes")
            return bool(value)
        if kind is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: {key} must be {kind.__name__}, found {value!r}") from None


def help_text() -> dict[str, str]:
    return {f.name.replace("_", "-"): f.metadata.get("help", "") for f in fields(RunConfig)}
