"""The sections of a run's settings: one frozen dataclass per concern, each validating its own fields.

A section is what one part of the system reads: `data` (which users and items), `model` (the recommender's
architecture), `train` (local training on a device), `record_dp` (on-device DP-SGD), `user_dp` (DP-FedAvg),
`secagg` (secure aggregation), `eval` (federated evaluation), `audit` (the empirical privacy audit) and `run`
(the federation loop and where its outputs go). Settings that concern more than one section (for example
"record-level DP needs the frozen item tower") are checked by `RunConfig`, which composes the sections.

Field metadata:
- `help`: one line, shown by `fedrec config` and `--help`.
- `server_only`: True when no device needs the value. Devices receive only the other fields
  (`RunConfig.client_view`), so a server-side setting (a budget, a run directory, a secret-free but irrelevant
  choice such as the evaluation fraction) never travels to every client.
- `old`: the flat key this field had before settings were grouped in sections (kebab-case). Old keys keep working
  for one release with a deprecation message naming the new key (`fedrec.shared.config.run_config`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from fedrec.shared.domain import DOMAINS
from fedrec.shared.errors import ConfigError

#: `data.format` values: "" (detect) and the readers of `fedrec.shared.data.load.FORMATS` (a test keeps them equal)
DATA_FORMATS = ("", "synthetic", "hetrec", "lastfm1k", "listenbrainz", "csv")
#: `secagg.mode` spellings -> the mode ('auto', 'on', 'off'); true/false come from `secagg.enabled` (bool)
SECAGG_MODES = {"auto": "auto", "on": "on", "true": "on", "1": "on", "yes": "on",
                "off": "off", "false": "off", "0": "off", "no": "off"}
#: `data.holdout` values (`fedrec.shared.data.split.split_users`)
HOLDOUTS = ("test+validation", "none")


def setting(default: Any, help: str, *, old: str = "", server_only: bool = False) -> Any:  # noqa: A002
    """A section field with its help text, its pre-section flat key ("" for settings added after the regrouping)
    and whether devices need it."""
    return field(default=default, metadata={"help": help, "old": old, "server_only": server_only})


class Section:
    """Common behaviour of the section dataclasses: a checker that names the dotted key and the value found."""

    NAME = ""

    def _check(self, ok: bool, key: str, why: str) -> None:
        if not ok:
            raise ConfigError(f"{self.NAME}.{key}: {why}, found {getattr(self, key)!r}")

    def replace(self, **changes: Any) -> Any:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class DataConfig(Section):
    """Which users and items: the data set and its per-user test/validation split."""

    NAME = "data"
    source: str = setting("synthetic:users=auto,items=600",
                          "data set: synthetic[:users=N,items=M,seed=S], a HetRec folder or a history file "
                          "(.tsv, .jsonl ListenBrainz, .csv); a deployed server names its public catalog. "
                          "users=auto: one synthetic user per SuperNode (flwr run), 200 in fedrec simulate",
                          old="data")
    format: str = setting("", "format of data.source: '' = detect (folder, suffix, a .tsv's columns), or synthetic, "
                              "hetrec, lastfm1k, listenbrainz, csv")
    domain: str = setting("music", "what the items are: music, movies, books, products or generic (prompt "
                                   "wording and CLI nouns; music keeps the 'Listening history:' prompt)")
    holdout: str = setting("test+validation", "per-user split: 'test+validation' holds out one test and one "
                                              "validation item per user; 'none' trains on every item (nothing is "
                                              "evaluated)")
    item_metadata: str = setting("", "item metadata CSV (item,name[,tags]) for a CSV data set", old="item-metadata")
    max_users: int = setting(0, "use the first N users only (0 = all)", old="max-users")
    split_seed: int = setting(0, "seed of the per-user test/validation split", old="split-seed")
    min_interactions: int = setting(5, "users with fewer items train but are not evaluated", old="min-interactions")

    def __post_init__(self) -> None:
        self._check(self.max_users >= 0, "max_users", "must be >= 0")
        self._check(self.min_interactions >= 3, "min_interactions", "must be >= 3 (test + validation + train)")
        self._check(self.format in DATA_FORMATS, "format", f"must be one of {', '.join(map(repr, DATA_FORMATS))}")
        self._check(self.domain in DOMAINS, "domain", f"must be one of {', '.join(DOMAINS)}")
        self._check(self.holdout in HOLDOUTS, "holdout", f"must be one of {', '.join(HOLDOUTS)}")


@dataclass(frozen=True)
class ModelConfig(Section):
    """The recommender: backbone, LoRA, the user-side head, the item side and the prompt."""

    NAME = "model"
    name: str = setting("minilm", "'minilm' (bundled all-MiniLM-L6-v2) or a local Hugging Face model directory",
                        old="model")
    lora_rank: int = setting(8, "LoRA rank r", old="lora-rank")
    lora_alpha: float = setting(16.0, "LoRA alpha (scaling = alpha / r)", old="lora-alpha")
    lora_targets: str = setting("", "comma-separated module names; empty = auto (q/v)", old="lora-targets")
    lora_layers: int = setting(0, "LoRA on the last N transformer layers only (0 = every layer)")
    lora_freeze_a: bool = setting(False, "train LoRA's B only, A fixed at its seeded start (FFA-LoRA)")
    head: bool = setting(True, "trainable d x d user-side projection", old="head")
    item_bias: bool = setting(True, "trainable per-item bias", old="item-bias")
    temperature: float = setting(0.05, "softmax temperature on cosine scores", old="temperature")
    history_tokens: int = setting(64, "token budget of the history prompt", old="history-tokens")
    item_tokens: int = setting(32, "token budget of an item text", old="item-tokens")
    history_order: str = setting("weight", "'weight' (largest weight first: plays, ratings) or 'recent'",
                                 old="history-order")
    prompt_tags: int = setting(1, "public tags shown after each item in the prompt", old="prompt-tags")
    item_tower: str = setting("frozen", "'frozen' cached catalog table + full softmax, or 'shared-lora'",
                              old="item-tower")

    def __post_init__(self) -> None:
        for key in ("lora_rank", "history_tokens", "item_tokens"):
            self._check(getattr(self, key) >= 1, key, "must be >= 1")
        self._check(self.prompt_tags >= 0, "prompt_tags", "must be >= 0")
        self._check(self.lora_layers >= 0, "lora_layers", "must be >= 0 (0 = every layer)")
        self._check(self.temperature > 0, "temperature", "must be > 0")
        self._check(self.item_tower in ("frozen", "shared-lora"), "item_tower", "must be 'frozen' or 'shared-lora'")
        self._check(self.history_order in ("weight", "recent"), "history_order", "must be 'weight' or 'recent'")

    @property
    def lora_target_list(self) -> list[str] | None:
        return [t.strip() for t in self.lora_targets.split(",") if t.strip()] or None


@dataclass(frozen=True)
class TrainConfig(Section):
    """One device's local training in a round."""

    NAME = "train"
    local_epochs: int = setting(1, "passes over the client's examples per round", old="local-epochs")
    learning_rate: float = setting(3e-3, "client Adam learning rate (LoRA, head)", old="learning-rate")
    bias_learning_rate: float = setting(50.0, "client learning rate of the item bias (an SGD-like step)",
                                        old="bias-learning-rate")
    batch_size: int = setting(16, "client batch size (examples)", old="batch-size")
    examples_per_user: int = setting(16, "fixed number of disjoint record buckets per user; one example per bucket",
                                     old="examples-per-user")
    negatives: int = setting(15, "sampled negatives per example (model.item_tower = 'shared-lora' only)",
                             old="negatives")

    def __post_init__(self) -> None:
        for key in ("local_epochs", "batch_size", "examples_per_user", "negatives"):
            self._check(getattr(self, key) >= 1, key, "must be >= 1")
        self._check(self.learning_rate > 0, "learning_rate", "must be > 0")
        self._check(self.bias_learning_rate >= 0, "bias_learning_rate", "must be >= 0")


@dataclass(frozen=True)
class RecordDpConfig(Section):
    """Record-level DP: on-device Opacus DP-SGD; the unit is one example slot (`fedrec.shared.train.dp_sgd`)."""

    NAME = "record_dp"
    enabled: bool = setting(False, "on-device DP-SGD (record-level DP) on/off", old="record-dp")
    noise_multiplier: float = setting(1.0, "z: per-step noise std is z * C on the sum of clipped per-example "
                                           "gradients", old="record-noise-multiplier")
    max_grad_norm: float = setting(1.0, "C: per-example gradient L2 clip norm", old="record-max-grad-norm")
    target_epsilon: float = setting(0.0, "if > 0: calibrate z so record_dp.target_rounds rounds reach this epsilon, "
                                         "and make it the device budget unless record_dp.epsilon_max is set",
                                    old="record-target-epsilon", server_only=True)
    target_rounds: int = setting(1, "rounds a device can train in within record_dp.target_epsilon",
                                 old="record-target-rounds", server_only=True)
    expected_batch: int = setting(4, "expected Poisson batch; sample rate q = min(1, this / examples)",
                                  old="record-expected-batch")
    delta: float = setting(1e-5, "record-level delta; must be < 1 / train.examples_per_user", old="record-delta")
    epsilon_max: float = setting(0.0, "a device declines a round that would exceed this (0 = no budget)",
                                 old="record-epsilon-max")
    accountant: str = setting("prv", "Opacus accountant of the device's epsilon and budget: 'prv' or 'rdp'",
                              old="record-accountant")

    def __post_init__(self) -> None:
        # z = 0 would be non-private (and Opacus' accountants refuse it)
        self._check(self.noise_multiplier > 0, "noise_multiplier", "must be > 0")
        self._check(self.max_grad_norm > 0, "max_grad_norm", "must be > 0")
        self._check(self.expected_batch >= 1, "expected_batch", "must be >= 1")
        self._check(0.0 < self.delta < 1.0, "delta", "must be in (0, 1)")
        self._check(self.epsilon_max >= 0, "epsilon_max", "must be >= 0 (0 = no budget)")
        self._check(self.target_epsilon >= 0, "target_epsilon", "must be >= 0 (0 = use the noise multiplier)")
        self._check(self.target_rounds >= 1, "target_rounds", "must be >= 1")
        self._check(self.accountant in ("prv", "rdp"), "accountant", "must be 'prv' or 'rdp'")


@dataclass(frozen=True)
class UserDpConfig(Section):
    """User-level DP (DP-FedAvg): each client clips its whole delta to S, noise z*S on the sum."""

    NAME = "user_dp"
    enabled: bool = setting(False, "user-level DP-FedAvg on/off", old="user-dp")
    noise_multiplier: float = setting(1.0, "z: noise std on the sum is z * S", old="user-noise-multiplier",
                                      server_only=True)
    clip_norm: float = setting(1.0, "S: L2 bound on each client's whole adapter delta", old="user-clip-norm")
    target_epsilon: float = setting(0.0, "if > 0: calibrate z so run.rounds releases reach this epsilon, and make it "
                                         "the user-level budget unless user_dp.epsilon_max is set",
                                    old="user-target-epsilon", server_only=True)
    delta: float = setting(0.0, "user-level delta (0 = min(1e-6, 1/(10 N)))", old="user-delta", server_only=True)
    epsilon_max: float = setting(0.0, "stop before a round would exceed this (0 = none)", old="user-epsilon-max",
                                 server_only=True)
    noise: str = setting("server", "who adds the noise: 'server' (Gaussian, after secure aggregation: the server sees "
                                   "the exact sum) or 'distributed' (each client adds a share of Skellam noise before "
                                   "masking: the server only ever sees a noisy sum; docs/distributed-dp.md)",
                         server_only=True)
    survivor_fraction: float = setting(0.9, "distributed noise: t = ceil(f x clients asked) survivors' noise shares "
                                            "are counted; a round with fewer survivors is aborted before unmasking",
                                       server_only=True)

    def __post_init__(self) -> None:
        self._check(self.noise in ("server", "distributed"), "noise", "must be 'server' or 'distributed'")
        self._check(0.0 < self.survivor_fraction <= 1.0, "survivor_fraction", "must be in (0, 1]")
        self._check(self.noise_multiplier > 0, "noise_multiplier", "must be > 0")
        self._check(self.clip_norm > 0, "clip_norm", "must be > 0")
        self._check(0.0 <= self.delta < 1.0, "delta", "must be in [0, 1)")
        self._check(self.epsilon_max >= 0, "epsilon_max", "must be >= 0")
        self._check(self.target_epsilon >= 0, "target_epsilon", "must be >= 0 (0 = use the noise multiplier)")


@dataclass(frozen=True)
class SecAggConfig(Section):
    """Secure aggregation (SecAgg+, `fedrec.shared.secagg`): the server sees only the sum of clipped deltas."""

    NAME = "secagg"
    mode: str = setting("auto", "SecAgg+ (the server only sees the sum of the clients' clipped deltas): 'auto' = on "
                                "whenever user_dp.enabled or run.deployment_nodes > 0, 'on' or 'off'; "
                                "secagg.enabled = true/false sets on/off", old="secure-aggregation")
    neighbours: int = setting(0, "SecAgg+ graph degree k per client (0 = auto: 2 ceil(log2 n) + 2, at most n-1)",
                              old="secagg-neighbours", server_only=True)
    threshold_fraction: float = setting(0.5, "shares needed: t = max(strict majority, ceil(f * (k + 1))) of k + 1 "
                                             "holders", old="secagg-threshold-fraction", server_only=True)
    ring_bits: int = setting(32, "SecAgg+ ring Z_2^b for the encoded deltas: 32 or 64", old="secagg-ring-bits")
    stage_timeout: float = setting(0.0, "seconds to wait for each SecAgg+ stage's replies (0 = wait for all)",
                                   old="secagg-stage-timeout", server_only=True)

    def __post_init__(self) -> None:
        mode = SECAGG_MODES.get(str(self.mode).strip().lower())
        self._check(mode is not None, "mode", "must be 'auto', 'on' or 'off' (or secagg.enabled = true/false)")
        object.__setattr__(self, "mode", mode)
        # What `enabled` answers until RunConfig resolves 'auto' against the other sections (`resolved`).
        object.__setattr__(self, "_effective", mode == "on")
        self._check(self.neighbours >= 0, "neighbours", "must be >= 0 (0 = auto)")
        self._check(0.5 <= self.threshold_fraction <= 1.0, "threshold_fraction",
                    "must be in [0.5, 1] (t is at least a strict majority of the share holders)")
        self._check(self.ring_bits in (32, 64), "ring_bits", "must be 32 or 64")
        self._check(self.stage_timeout >= 0, "stage_timeout", "must be >= 0 (0 = wait for every reply)")

    @property
    def enabled(self) -> bool:
        """Whether the run uses SecAgg+. Every reader asks this, never `mode`: 'auto' only means something next to
        the other sections, so a section on its own answers True for 'on' only, and the copy RunConfig holds
        (`resolved`) answers for 'auto' too."""
        return bool(self._effective)  # type: ignore[attr-defined]

    def resolved(self, *, user_dp: bool, deployed: bool) -> SecAggConfig:
        """A copy whose `enabled` settles 'auto': on whenever user-level DP is on (otherwise every clipped update
        reaches the server in the clear) or the run is a deployment (`fedrec server`: real devices, real data).
        The mode itself is kept, so the decision is taken again if user_dp or the deployment changes."""
        copy = dataclasses.replace(self)
        object.__setattr__(copy, "_effective", self.mode == "on" or (self.mode == "auto" and (user_dp or deployed)))
        return copy


@dataclass(frozen=True)
class EvalConfig(Section):
    """Federated evaluation: who is evaluated, and when."""

    NAME = "eval"
    every: int = setting(5, "evaluate every k rounds (and after the last)", old="evaluate-every", server_only=True)
    fraction: float = setting(1.0, "fraction of evaluable clients evaluated", old="fraction-evaluate",
                              server_only=True)
    fraction_final: float = setting(1.0, "fraction evaluated after the last round (1 = every user, whatever "
                                         "eval.fraction is)", old="fraction-evaluate-final", server_only=True)

    def __post_init__(self) -> None:
        self._check(self.every >= 1, "every", "must be >= 1")
        self._check(0.0 < self.fraction <= 1.0, "fraction", "must be in (0, 1]")
        self._check(0.0 < self.fraction_final <= 1.0, "fraction_final", "must be in (0, 1]")


@dataclass(frozen=True)
class AuditConfig(Section):
    """The empirical privacy audit (`fedrec.server.empirical_audit`): canaries measured in the same run."""

    NAME = "audit"
    canaries: int = setting(0, "record-level audit: m canary examples on users' devices, each in w.p. 1/2",
                            old="audit-canaries")
    canary_clients: int = setting(0, "user-level audit: K extra canary clients that send random directions",
                                  old="audit-canary-clients")
    guess_fraction: float = setting(0.1, "the audit guesses 'in' for this fraction of canaries and 'out' for as many",
                                    old="audit-guess-fraction", server_only=True)
    seed: int = setting(0, "0 = a secret audit seed; else fixed (tests only: anyone with the config can recompute "
                           "which canaries are in)", old="audit-seed", server_only=True)

    def __post_init__(self) -> None:
        self._check(self.canaries >= 0, "canaries", "must be >= 0 (0 = no record-level audit)")
        self._check(self.canary_clients >= 0, "canary_clients", "must be >= 0 (0 = no user-level audit)")
        self._check(0.0 < self.guess_fraction <= 0.5, "guess_fraction", "must be in (0, 0.5]")
        self._check(self.seed >= 0, "seed", "must be >= 0 (0 = secret)")


@dataclass(frozen=True)
class RunSection(Section):
    """The federation loop (rounds, sampling, aggregation) and where the run's outputs go."""

    NAME = "run"
    rounds: int = setting(20, "number of federated adapter rounds (after the release phase)", old="num-server-rounds",
                          server_only=True)
    clients_per_round: int = setting(10, "clients sampled per round", old="clients-per-round", server_only=True)
    fraction_train: float = setting(0.0, "sample this fraction of all clients per round instead (0 = use the count)",
                                    old="fraction-train", server_only=True)
    client_sampling: str = setting("fixed", "'poisson' (rate C/N, amplification claimed) or 'fixed' (no "
                                            "amplification; under user_dp only the whole population, "
                                            "run.fraction_train = 1)", old="client-sampling", server_only=True)
    aggregation_weights: str = setting("equal", "'equal' or 'examples'", old="aggregation-weights")
    server_learning_rate: float = setting(1.0, "global += lr * step (the server optimizer's step)",
                                          old="server-learning-rate", server_only=True)
    server_optimizer: str = setting("sgd", "'sgd' (FedAvg), 'momentum' (FedAvgM) or 'adam' (FedAdam) on the released "
                                           "mean update", server_only=True)
    server_momentum: float = setting(0.9, "momentum (beta1) of the server optimizer", server_only=True)
    seed: int = setting(0, "seed of client sampling and local training", old="seed", server_only=True)
    deployment_nodes: int = setting(0, "0 = simulation (one node per user of data); N > 0 = a deployed federation "
                                       "of N devices, each with its own history, and data names only the public "
                                       "catalog", old="deployment-nodes")
    dp_diagnostics: bool = setting(False, "under DP, devices also send loss, example and token counts in the clear "
                                          "(simulation only)", old="dp-diagnostics")
    server_key: str = setting("", "Ed25519 key that signs run reports (default: <run.dir>/server-ed25519.pem)",
                              old="server-key", server_only=True)
    device_state_dir: str = setting("", "simulation: root of the devices' state dirs (default: "
                                        "<run.dir>/<run.name>/devices)", old="device-state-dir", server_only=True)
    dir: str = setting("runs", "parent folder of run directories", old="run-dir", server_only=True)
    name: str = setting("", "run directory name (default: timestamp)", old="run-name", server_only=True)

    def __post_init__(self) -> None:
        self._check(self.rounds >= 0, "rounds", "must be >= 0 (0 = the releases alone, no adapter training)")
        self._check(self.clients_per_round >= 1, "clients_per_round", "must be >= 1")
        self._check(self.deployment_nodes >= 0, "deployment_nodes", "must be >= 0 (0 = simulation)")
        self._check(0.0 <= self.fraction_train <= 1.0, "fraction_train", "must be in [0, 1]")
        self._check(self.client_sampling in ("poisson", "fixed"), "client_sampling", "must be 'poisson' or 'fixed'")
        self._check(self.aggregation_weights in ("equal", "examples"), "aggregation_weights",
                    "must be 'equal' or 'examples'")
        self._check(self.server_learning_rate > 0, "server_learning_rate", "must be > 0")
        self._check(self.server_optimizer in ("sgd", "momentum", "adam"), "server_optimizer",
                    "must be 'sgd', 'momentum' or 'adam'")
        self._check(0.0 <= self.server_momentum < 1.0, "server_momentum", "must be in [0, 1)")

    def clients_sampled(self, population: int) -> int:
        """Clients asked to train each round: a fraction of the population if set, else the count (clamped to
        1..population; `cohort_note` says when it was)."""
        k = round(self.fraction_train * population) if self.fraction_train > 0 else self.clients_per_round
        return max(1, min(k, population))

    def cohort_note(self, population: int) -> str:
        """What `clients_sampled` did to the configured cohort if it had to clamp it, in words ("" if it did not)."""
        k = round(self.fraction_train * population) if self.fraction_train > 0 else self.clients_per_round
        asked = f"run.fraction_train = {self.fraction_train} of {population} clients is {k}" \
            if self.fraction_train > 0 else f"run.clients_per_round = {k}"
        if k > population:
            poisson = " (Poisson sampling at q = 1: no amplification by sampling)" \
                if self.client_sampling == "poisson" else ""
            return f"{asked}, more than the {population} clients: every round asks all {population}{poisson}"
        return f"{asked}: every round asks 1 client instead" if k < 1 else ""
"""Section name -> its dataclass, in the order settings are listed (pyproject.toml, `fedrec config`)."""
