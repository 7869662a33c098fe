"""Every setting of a run, in one typed, validated object made of sections (`fedrec.shared.config.sections`).

Keys are dotted, `section.field`, snake_case: `user_dp.noise_multiplier`, `train.local_epochs`. The same keys
are nested tables in `pyproject.toml`'s `[tool.flwr.app.config]` (Flower flattens them to the dotted form with
`flatten_dict`), `-s/--set` overrides on the command line, preset TOML files (`fedrec.shared.config.presets`)
and the `config` object of a run directory's config.json. Kebab-case is accepted as well (`user-dp.clip-norm`).

Unknown keys are an error, never ignored. The flat keys used before sections existed (`user-noise-multiplier`)
still work for one release: each one is translated to its new key with a `FutureWarning` naming the new key.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from fedrec.shared.config.hybrid import HybridConfig
from fedrec.shared.config.sections import (
    AuditConfig,
    DataConfig,
    EvalConfig,
    ModelConfig,
    RecordDpConfig,
    RunSection,
    SecAggConfig,
    Section,
    TrainConfig,
    UserDpConfig,
)
from fedrec.shared.errors import ConfigError

log = logging.getLogger("fedrec.config")

# the run's sections, in the order they are listed and written
SECTIONS: dict[str, type[Section]] = {
    cls.NAME: cls for cls in (DataConfig, ModelConfig, HybridConfig, TrainConfig, RecordDpConfig, UserDpConfig,
                              SecAggConfig, EvalConfig, AuditConfig, RunSection)
}


def _key(section: str, name: str) -> str:
    return f"{section}.{name}"


#: dotted key -> the section field it sets
FIELDS: dict[str, dataclasses.Field] = {
    _key(s, f.name): f for s, cls in SECTIONS.items() for f in fields(cls)
}
#: the pre-section flat key (kebab-case) -> its dotted key (fields added after the regrouping have none: old="")
DEPRECATED: dict[str, str] = {f.metadata["old"]: key for key, f in FIELDS.items() if f.metadata["old"]}
#: keys that are not fields but set one: `secagg.enabled = true/false` is how most people (and older run configs)
#: say `secagg.mode = on/off`, and reading it (`cfg.get`, `cfg.secagg.enabled`) gives the resolved bool
ALIASES: dict[str, str] = {"secagg.enabled": "secagg.mode"}


@dataclass(frozen=True)
class RunConfig:
    """Settings of one federated run: one attribute per section (`cfg.user_dp.noise_multiplier`).

    Build it from keys with `from_mapping` (dotted, nested or deprecated flat keys), change it with `updated`
    (dotted keys) or `replace` (whole sections). Cross-section rules are checked here; each section checks its own.
    """

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    hybrid: HybridConfig = field(default_factory=HybridConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    record_dp: RecordDpConfig = field(default_factory=RecordDpConfig)
    user_dp: UserDpConfig = field(default_factory=UserDpConfig)
    secagg: SecAggConfig = field(default_factory=SecAggConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    run: RunSection = field(default_factory=RunSection)

    def __post_init__(self) -> None:
        def check(ok: bool, key: str, why: str) -> None:
            if not ok:
                raise ConfigError(f"{key}: {why}, found {self.get(key)!r}")

        # secagg.mode = 'auto' is settled here, against user_dp and the deployment, on every construction (so a
        # config that turns user_dp on later gets secure aggregation too); `cfg.secagg.enabled` is the answer.
        object.__setattr__(self, "secagg", self.secagg.resolved(user_dp=self.user_dp.enabled,
                                                                deployed=self.run.deployment_nodes > 0))

        if self.run.deployment_nodes:  # canary clients are extra simulated partitions; a deployment has none
            check(self.audit.canary_clients == 0, "audit.canary_clients",
                  "must be 0 with run.deployment_nodes > 0 (canary clients are simulated nodes)")
        if self.record_dp.enabled and self.audit.canaries:  # every device then has K + 1 DP-SGD slots
            bound = 1.0 / (self.train.examples_per_user + 1)
            check(self.record_dp.delta < bound, "record_dp.delta",
                  f"must be < 1 / (train.examples_per_user + 1) = {bound:g} with record_dp.enabled and audit.canaries")
        if self.secagg.enabled:
            auto = " (secagg.mode = 'auto' turns it on for a deployment; secagg.enabled = false turns it off)" \
                if self.secagg.mode == "auto" else ""
            check(self.run.aggregation_weights == "equal", "run.aggregation_weights",
                  f"must be 'equal' with secagg.enabled (the server only sees an unweighted sum){auto}")
        if self.user_dp.enabled and self.user_dp.noise == "distributed":
            check(self.secagg.enabled, "secagg.enabled", "must be on with user_dp.noise = 'distributed' (the clients' "
                                                         "noise shares only protect a sum the server cannot unmask "
                                                         "per client)")
        if self.record_dp.enabled or self.user_dp.enabled:
            check(self.run.aggregation_weights == "equal", "run.aggregation_weights",
                  "must be 'equal' with record_dp or user_dp enabled (example counts would travel in the clear, and "
                  "DP-FedAvg's sensitivity assumes equal weights)")
        if self.record_dp.enabled:
            # A device has at most examples_per_user examples, so this keeps delta < 1/n on every device.
            check(self.record_dp.delta < 1.0 / self.train.examples_per_user, "record_dp.delta",
                  f"must be < 1 / train.examples_per_user = {1.0 / self.train.examples_per_user:g} with "
                  "record_dp.enabled")
            # Only the frozen catalog tower's per-example path (and its empty-batch step) is verified under DP-SGD.
            check(self.model.item_tower == "frozen", "model.item_tower", "must be 'frozen' with record_dp.enabled")

    # -- reading ---------------------------------------------------------------------------------------------

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], source: str = "config") -> RunConfig:
        """Build from dotted keys (`user_dp.clip_norm`), nested section tables, or deprecated flat keys.

        Kebab- and snake-case are both accepted. Unknown keys and values of the wrong type are `ConfigError`s
        naming `source`, the key as written and the value.
        """
        flat = _flatten(values)
        by_section: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
        for raw_key, value in flat.items():
            key = canonical_key(raw_key, source=source)
            section, name = key.split(".", 1)
            by_section[section][name] = _coerce(FIELDS[key], value, source, raw_key)
        try:
            return cls(**{s: SECTIONS[s](**kw) for s, kw in by_section.items()})
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None

    def get(self, key: str) -> Any:
        """The value of a dotted key (`run.rounds`; `secagg.enabled` is the resolved bool)."""
        alias = key.replace("-", "_")
        section, name = (alias if alias in ALIASES else canonical_key(key)).split(".", 1)
        return getattr(getattr(self, section), name)

    @property
    def private(self) -> bool:
        """Any privacy setting on (record_dp, user_dp or secagg): then nothing per user leaves a device in the clear
        (evaluation only inside a secure sum, no per-client telemetry), and per-client rows stay server-private."""
        return self.record_dp.enabled or self.user_dp.enabled or self.secagg.enabled

    @property
    def secagg_warning(self) -> str:
        """Why turning secure aggregation off here matters, or "" when it does not: with user-level DP every
        clipped update then reaches the server in the clear (the noise is added after it has seen them), and a
        deployment's devices send their updates of real data unmasked. Shown by `fedrec simulate`, `fedrec server`
        and the ServerApp, once per run (not on every construction: configs are rebuilt often)."""
        if self.secagg.enabled or not (self.user_dp.enabled or self.run.deployment_nodes):
            return ""
        why = "user-level DP is on" if self.user_dp.enabled else "this is a deployment (run.deployment_nodes > 0)"
        return (f"warning: secure aggregation is off (secagg.enabled = false) although {why}: the server receives "
                "every client's update in the clear")

    # -- writing ---------------------------------------------------------------------------------------------

    def to_flat(self) -> dict[str, Any]:
        """{dotted key: plain value} of every setting: what a Flower ConfigRecord / run_config carries."""
        return {_key(s, f.name): getattr(getattr(self, s), f.name) for s, cls in SECTIONS.items() for f in fields(cls)}

    def to_nested(self) -> dict[str, dict[str, Any]]:
        """{section: {field: value}}: what config.json and the TOML files hold."""
        return {s: dataclasses.asdict(getattr(self, s)) for s in SECTIONS}

    def client_view(self) -> dict[str, Any]:
        """The settings a device needs, as dotted keys: every field not marked `server_only`.

        A deployed device reads its own history, so it gets no `data` section (the server's `data.source` names
        the server's public catalog file and means nothing on a device), except what shapes its training:
        `data.domain` (the words every prompt begins with) and `data.holdout` (whether it holds items out).
        """
        skip = {"data"} if self.run.deployment_nodes else set()
        keep = {"data.domain", "data.holdout"}
        view = {k: v for k, v in self.to_flat().items()
                if not FIELDS[k].metadata["server_only"] and (k.split(".", 1)[0] not in skip or k in keep)}
        view["secagg.mode"] = "on" if self.secagg.enabled else "off"  # the server's decision, not 'auto' again
        return view

    # -- changing --------------------------------------------------------------------------------------------

    def replace(self, **sections: Section) -> RunConfig:
        """A copy with whole sections replaced: `cfg.replace(user_dp=cfg.user_dp.replace(enabled=True))`."""
        return dataclasses.replace(self, **sections)

    def updated(self, changes: Mapping[str, Any], source: str = "update") -> RunConfig:
        """A copy with some settings changed, given as dotted (or deprecated flat) keys."""
        return RunConfig.from_mapping({**self.to_flat(), **_flatten(changes)}, source=source)

    def differences(self, other: RunConfig) -> list[str]:
        """`key: a != b` for every setting that differs (resume checks, summaries)."""
        mine, theirs = self.to_flat(), other.to_flat()
        return [f"{k}: {mine[k]!r} != {theirs[k]!r}" for k in mine if mine[k] != theirs[k]]

    def changed_from_defaults(self) -> dict[str, Any]:
        """{dotted key: value} of the settings that differ from the embedded defaults."""
        defaults = RunConfig().to_flat()
        return {k: v for k, v in self.to_flat().items() if v != defaults[k]}


def canonical_key(raw_key: str, *, source: str = "config") -> str:
    """`user-dp.clip-norm` -> `user_dp.clip_norm`; a deprecated flat key -> its new key (with a FutureWarning)."""
    if raw_key.replace("-", "_") in ALIASES:
        return ALIASES[raw_key.replace("-", "_")]
    if raw_key in DEPRECATED or raw_key.replace("_", "-") in DEPRECATED:
        new = DEPRECATED[raw_key if raw_key in DEPRECATED else raw_key.replace("_", "-")]
        message = (f"{source}: setting {raw_key!r} is deprecated and will be removed in the next release; "
                   f"use {new!r}")
        warnings.warn(message, FutureWarning, stacklevel=3)
        log.warning("%s", message)
        return new
    key = raw_key.replace("-", "_")
    if key not in FIELDS:
        raise ConfigError(f"{source}: unknown setting {raw_key!r}; known: {', '.join(sorted(FIELDS))}")
    return key


def nest(flat: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """{dotted key: value} -> {section: {field: value}} (what TOML files and config.json hold)."""
    out: dict[str, dict[str, Any]] = {}
    for key, value in flat.items():
        section, name = key.split(".", 1)
        out.setdefault(section, {})[name] = value
    return out


def _flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in values.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            out.update(_flatten(v, key))
        else:
            out[key] = v
    return out


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
            if isinstance(value, str):
                value = value.strip()
            return int(value)
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: {key} must be {kind.__name__}, found {value!r}") from None


def help_text() -> dict[str, str]:
    """{dotted key: help} of every setting (what `fedrec config` prints)."""
    return {k: f.metadata["help"] for k, f in FIELDS.items()}
