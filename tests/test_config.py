"""RunConfig parsing and validation, and that `flwr run .` embeds the same defaults as `fedrec simulate`."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from fedrec.shared.config import ConfigError, RunConfig, help_text

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_from_mapping_accepts_kebab_and_snake_case() -> None:
    """Kebab-case (TOML/CLI) and snake_case (Python) keys both set the same field."""
    # Execute
    kebab = RunConfig.from_mapping({"local-epochs": 3, "lora-rank": 4, "item-tower": "shared-lora"})
    snake = RunConfig.from_mapping({"local_epochs": 3, "lora_rank": 4, "item_tower": "shared-lora"})
    # Assert
    assert kebab == snake == RunConfig(local_epochs=3, lora_rank=4, item_tower="shared-lora")


def test_from_mapping_empty_gives_defaults() -> None:
    """No settings at all is the default configuration."""
    assert RunConfig.from_mapping({}) == RunConfig()


def test_from_mapping_rejects_unknown_key() -> None:
    """An unknown key is an error naming the source and the key as written, never silently ignored."""
    with pytest.raises(ConfigError, match=r"my-source: unknown setting 'local-epoch'"):
        RunConfig.from_mapping({"local-epoch": 2}, source="my-source")


@pytest.mark.parametrize(
    ("key", "value", "pattern"),
    [
        ("lora-rank", 0, r"lora-rank: must be >= 1, found 0"),
        ("fraction-evaluate", 1.5, r"fraction-evaluate: must be in \(0, 1\], found 1.5"),
        ("temperature", 0.0, r"temperature: must be > 0, found 0.0"),
        ("min-interactions", 2, r"min-interactions: must be >= 3.*found 2"),
        ("item-tower", "both", r"item-tower: must be 'frozen' or 'shared-lora', found 'both'"),
        ("aggregation-weights", "size", r"aggregation-weights: .*found 'size'"),
    ],
)
def test_from_mapping_rejects_out_of_range(key: str, value: object, pattern: str) -> None:
    """An out-of-range value is a ConfigError naming the source, the key (kebab-case) and the value."""
    with pytest.raises(ConfigError, match=r"^cli: " + pattern):
        RunConfig.from_mapping({key: value}, source="cli")


def test_from_mapping_coerces_strings() -> None:
    """String values from a command line become the field's type: 'true'/'false' bools, '3' ints, '0.5' floats."""
    # Execute
    cfg = RunConfig.from_mapping({"head": "false", "item-bias": "True", "local-epochs": "3",
                                  "learning-rate": "0.5", "lora-alpha": 8, "seed": 7.0})
    # Assert
    assert cfg.head is False and cfg.item_bias is True
    assert cfg.local_epochs == 3 and type(cfg.local_epochs) is int
    assert cfg.learning_rate == 0.5 and type(cfg.learning_rate) is float
    assert cfg.lora_alpha == 8.0 and type(cfg.lora_alpha) is float
    assert cfg.seed == 7 and type(cfg.seed) is int


@pytest.mark.parametrize(("key", "value"), [("head", "maybe"), ("local-epochs", "three"), ("seed", 1.5),
                                            ("learning-rate", "fast")])
def test_from_mapping_rejects_uncoercible(key: str, value: object) -> None:
    """A value that is not of the field's type is a ConfigError naming the key and the value."""
    with pytest.raises(ConfigError, match=rf"{key} must be \w+, found {value!r}"):
        RunConfig.from_mapping({key: value})


def test_to_flwr_round_trips() -> None:
    """to_flwr() gives kebab-case keys that from_mapping reads back to an equal config."""
    cfg = RunConfig(lora_rank=4, head=False, data="synthetic:users=10,items=30")
    flat = cfg.to_flwr()
    assert all("_" not in k for k in flat)
    assert RunConfig.from_mapping(flat) == cfg


def test_pyproject_flwr_config_matches_runconfig_defaults() -> None:
    """[tool.flwr.app.config] lists exactly the RunConfig fields, with equal default values of the same type."""
    # Prepare
    table = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["tool"]["flwr"]["app"]["config"]
    defaults = RunConfig().to_flwr()
    # Assert
    assert set(table) == set(defaults), (
        f"only in pyproject: {sorted(set(table) - set(defaults))}, only in RunConfig: "
        f"{sorted(set(defaults) - set(table))}"
    )
    for key, default in defaults.items():
        assert table[key] == default and type(table[key]) is type(default), (
            f"{key}: pyproject {table[key]!r} != RunConfig {default!r}"
        )
    assert RunConfig.from_mapping(table, source="[tool.flwr.app.config]") == RunConfig()


def test_every_field_has_help() -> None:
    """Every setting has a non-empty help text in help_text(), keyed kebab-case (the CLI shows it)."""
    helps = help_text()
    assert set(helps) == set(RunConfig().to_flwr())
    assert not [k for k, v in helps.items() if not v]


def test_clients_sampled_by_fraction_or_count():
    """fraction-train (when > 0) overrides the count; the result stays within [1, population]."""
    from fedrec.shared.config import RunConfig

    assert RunConfig(clients_per_round=10).clients_sampled(1892) == 10
    assert RunConfig(fraction_train=0.05).clients_sampled(1892) == 95
    assert RunConfig(clients_per_round=50).clients_sampled(12) == 12
    assert RunConfig(fraction_train=0.001).clients_sampled(100) == 1
