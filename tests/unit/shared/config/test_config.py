"""RunConfig parsing and validation, and that `flwr run .` embeds the same defaults as `fedrec simulate`."""

from __future__ import annotations

import tomllib
import warnings
from pathlib import Path

import pytest

from fedrec.shared.config import DEPRECATED, ConfigError, RunConfig, help_text, load_preset, preset_names

PYPROJECT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file()) / "pyproject.toml"


def test_from_mapping_accepts_dotted_nested_kebab_and_snake_case() -> None:
    """Dotted snake_case, dotted kebab-case and nested tables all set the same field."""
    # Execute
    snake = RunConfig.from_mapping({"train.local_epochs": 3, "model.lora_rank": 4, "model.item_tower": "shared-lora"})
    kebab = RunConfig.from_mapping({"train.local-epochs": 3, "model.lora-rank": 4, "model.item-tower": "shared-lora"})
    nested = RunConfig.from_mapping({"train": {"local_epochs": 3},
                                     "model": {"lora_rank": 4, "item_tower": "shared-lora"}})
    # Assert
    assert snake == kebab == nested
    assert snake.train.local_epochs == 3 and snake.model.lora_rank == 4 and snake.model.item_tower == "shared-lora"
    assert snake == RunConfig().updated({"train.local_epochs": 3, "model.lora_rank": 4,
                                         "model.item_tower": "shared-lora"})


def test_from_mapping_empty_gives_defaults() -> None:
    """No settings at all is the default configuration."""
    assert RunConfig.from_mapping({}) == RunConfig()


def test_from_mapping_rejects_unknown_key() -> None:
    """An unknown key is an error naming the source and the key as written, never silently ignored."""
    with pytest.raises(ConfigError, match=r"my-source: unknown setting 'train.local_epoch'"):
        RunConfig.from_mapping({"train.local_epoch": 2}, source="my-source")
    with pytest.raises(ConfigError, match=r"my-source: unknown setting 'local-epoch'"):
        RunConfig.from_mapping({"local-epoch": 2}, source="my-source")


@pytest.mark.parametrize(("old", "new"), sorted(DEPRECATED.items()))
def test_deprecated_flat_key_still_works_and_names_the_new_key(old: str, new: str) -> None:
    """Every pre-section flat key sets its new field for one release, with a FutureWarning naming the new key."""
    # Prepare
    value = RunConfig().get(new)
    # Execute
    with pytest.warns(FutureWarning, match=rf"'{old}' is deprecated .*use '{new}'"):
        cfg = RunConfig.from_mapping({old: value}, source="cli")
    # Assert
    assert cfg.get(new) == value


def test_deprecated_key_sets_the_value_it_names() -> None:
    """An old key changes exactly its new field (snake_case old keys too)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        cfg = RunConfig.from_mapping({"user-noise-multiplier": 0.5, "num_server_rounds": 7})
    assert cfg.user_dp.noise_multiplier == 0.5 and cfg.run.rounds == 7
    assert cfg.differences(RunConfig()) == ["user_dp.noise_multiplier: 0.5 != 1.0", "run.rounds: 7 != 20"]


@pytest.mark.parametrize(
    ("key", "value", "pattern"),
    [
        ("model.lora_rank", 0, r"model.lora_rank: must be >= 1, found 0"),
        ("eval.fraction", 1.5, r"eval.fraction: must be in \(0, 1\], found 1.5"),
        ("model.temperature", 0.0, r"model.temperature: must be > 0, found 0.0"),
        ("data.min_interactions", 2, r"data.min_interactions: must be >= 3.*found 2"),
        ("model.item_tower", "both", r"model.item_tower: must be 'frozen' or 'shared-lora', found 'both'"),
        ("run.aggregation_weights", "size", r"run.aggregation_weights: .*found 'size'"),
    ],
)
def test_from_mapping_rejects_out_of_range(key: str, value: object, pattern: str) -> None:
    """An out-of-range value is a ConfigError naming the source, the dotted key and the value."""
    with pytest.raises(ConfigError, match=r"^cli: " + pattern):
        RunConfig.from_mapping({key: value}, source="cli")


def test_cross_section_rule_names_both_keys() -> None:
    """A rule spanning sections names the key to change (secure aggregation needs equal weights)."""
    with pytest.raises(ConfigError, match=r"run.aggregation_weights: must be 'equal' with secagg.enabled"):
        RunConfig.from_mapping({"secagg.enabled": True, "run.aggregation_weights": "examples"})


def test_from_mapping_coerces_strings() -> None:
    """String values from a command line become the field's type: 'true'/'false' bools, '3' ints, '0.5' floats."""
    # Execute
    cfg = RunConfig.from_mapping({"model.head": "false", "model.item_bias": "True", "train.local_epochs": "3",
                                  "train.learning_rate": "0.5", "model.lora_alpha": 8, "run.seed": 7.0})
    # Assert
    assert cfg.model.head is False and cfg.model.item_bias is True
    assert cfg.train.local_epochs == 3 and type(cfg.train.local_epochs) is int
    assert cfg.train.learning_rate == 0.5 and type(cfg.train.learning_rate) is float
    assert cfg.model.lora_alpha == 8.0 and type(cfg.model.lora_alpha) is float
    assert cfg.run.seed == 7 and type(cfg.run.seed) is int


@pytest.mark.parametrize(("key", "value"), [("model.head", "maybe"), ("train.local_epochs", "three"),
                                            ("run.seed", 1.5), ("train.learning_rate", "fast")])
def test_from_mapping_rejects_uncoercible(key: str, value: object) -> None:
    """A value that is not of the field's type is a ConfigError naming the key and the value."""
    with pytest.raises(ConfigError, match=rf"{key} must be \w+, found {value!r}"):
        RunConfig.from_mapping({key: value})


def test_flat_and_nested_round_trip() -> None:
    """to_flat() gives dotted snake_case keys and to_nested() section tables; both read back to an equal config."""
    cfg = RunConfig.from_mapping({"model.lora_rank": 4, "model.head": False, "data.source": "synthetic:users=10"})
    flat = cfg.to_flat()
    assert all("-" not in k and k.count(".") == 1 for k in flat)
    assert RunConfig.from_mapping(flat) == cfg
    assert RunConfig.from_mapping(cfg.to_nested()) == cfg


def test_pyproject_flwr_config_matches_runconfig_defaults() -> None:
    """[tool.flwr.app.config] lists exactly the RunConfig sections and fields, with equal defaults of the same type."""
    # Prepare
    table = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["tool"]["flwr"]["app"]["config"]
    defaults = RunConfig().to_nested()
    # Assert
    assert set(table) == set(defaults)
    for section, values in defaults.items():
        assert set(table[section]) == set(values), (
            f"[{section}] only in pyproject: {sorted(set(table[section]) - set(values))}, only in RunConfig: "
            f"{sorted(set(values) - set(table[section]))}"
        )
        for key, default in values.items():
            got = table[section][key]
            assert got == default and type(got) is type(default), f"{section}.{key}: {got!r} != {default!r}"
    assert RunConfig.from_mapping(table, source="[tool.flwr.app.config]") == RunConfig()


def test_every_field_has_help() -> None:
    """Every setting has a non-empty help text in help_text(), keyed by its dotted key (the CLI shows it)."""
    helps = help_text()
    assert set(helps) == set(RunConfig().to_flat())
    assert not [k for k, v in helps.items() if not v]


def test_clients_sampled_by_fraction_or_count():
    """run.fraction_train (when > 0) overrides the count; the result stays within [1, population]."""
    def run(**kw: float) -> RunConfig:
        return RunConfig.from_mapping({f"run.{k}": v for k, v in kw.items()}).run

    assert run(clients_per_round=10).clients_sampled(1892) == 10
    assert run(fraction_train=0.05).clients_sampled(1892) == 95
    assert run(clients_per_round=50).clients_sampled(12) == 12
    assert run(fraction_train=0.001).clients_sampled(100) == 1


def test_client_view_leaves_out_server_only_settings() -> None:
    """Devices receive no server-only setting (budgets, run directory, evaluation schedule), and a deployed device
    no data section (the server's catalog path means nothing on a device) but the prompt wording and holdout."""
    # Prepare
    cfg = RunConfig.from_mapping({"user_dp.enabled": True, "user_dp.epsilon_max": 8.0, "run.dir": "/secret/runs"})
    # Execute
    view = cfg.client_view()
    deployed = cfg.updated({"run.deployment_nodes": 3, "data.source": "/srv/catalog.json"}).client_view()
    # Assert
    assert view["user_dp.enabled"] is True and "user_dp.clip_norm" in view and "data.source" in view
    for key in ("user_dp.epsilon_max", "user_dp.noise_multiplier", "run.dir", "run.name", "eval.every",
                "run.server_key", "audit.seed"):
        assert key not in view
    assert sorted(k for k in deployed if k.startswith("data.")) == ["data.domain", "data.holdout"]
    assert RunConfig.from_mapping(view).user_dp.clip_norm == cfg.user_dp.clip_norm


@pytest.mark.parametrize("name", preset_names())
def test_presets_are_valid_override_files(name: str) -> None:
    """Each shipped preset parses into a valid RunConfig and changes at least one setting."""
    cfg = RunConfig.from_mapping(load_preset(name), source=f"preset {name}")
    assert cfg.changed_from_defaults()
