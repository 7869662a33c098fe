"""Issue 17: `secagg.mode` is 'auto' by default and resolves to on with user-level DP or in a deployment; an
explicit `secagg.enabled = false` keeps it off and says why that matters."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from fedrec.shared.config import ConfigError, RunConfig

ROOT = Path(__file__).resolve().parents[4]


def test_auto_is_on_with_user_dp_only() -> None:
    assert RunConfig().secagg.mode == "auto" and not RunConfig().secagg.enabled
    assert not RunConfig.from_mapping({"record_dp.enabled": True}).secagg.enabled
    cfg = RunConfig.from_mapping({"user_dp.enabled": True})
    assert cfg.secagg.enabled and cfg.get("secagg.enabled") is True and cfg.secagg_warning == ""


def test_auto_follows_user_dp_when_it_changes() -> None:
    """The mode is kept, not the decision: turning user_dp on later (updated or replace) turns SecAgg+ on."""
    base = RunConfig()
    assert base.updated({"user_dp.enabled": True}).secagg.enabled
    on = base.replace(user_dp=base.user_dp.replace(enabled=True))
    assert on.secagg.enabled and not on.replace(user_dp=on.user_dp.replace(enabled=False)).secagg.enabled
    assert base.secagg.mode == "auto" and not base.secagg.enabled  # the original is untouched


def test_deployment_is_on_by_default() -> None:
    cfg = RunConfig.from_mapping({"run.deployment_nodes": 3, "data.source": "/srv/catalog.json"})
    assert cfg.secagg.enabled and cfg.client_view()["secagg.mode"] == "on"


@pytest.mark.parametrize("settings", [{"user_dp.enabled": True}, {"run.deployment_nodes": 3}])
def test_explicitly_off_is_off_with_a_warning(settings) -> None:
    for off in ({"secagg.enabled": False}, {"secagg.enabled": "false"}, {"secagg.mode": "off"}):
        cfg = RunConfig.from_mapping({**settings, **off})
        assert not cfg.secagg.enabled and cfg.secagg.mode == "off"
        assert cfg.secagg_warning.startswith("warning: secure aggregation is off") and "in the clear" in \
            cfg.secagg_warning
        assert cfg.client_view()["secagg.mode"] == "off"
    assert RunConfig.from_mapping({"secagg.enabled": False}).secagg_warning == ""  # nothing to warn about


def test_explicitly_on_and_the_round_trips() -> None:
    cfg = RunConfig.from_mapping({"secagg.enabled": True})
    assert cfg.secagg.enabled and cfg.secagg.mode == "on"
    again = RunConfig.from_mapping(cfg.to_nested())
    assert again == cfg and again.secagg.enabled
    auto = RunConfig.from_mapping(RunConfig.from_mapping({"user_dp.enabled": True}).to_flat())
    assert auto.secagg.mode == "auto" and auto.secagg.enabled
    with pytest.raises(ConfigError, match="secagg.mode"):
        RunConfig.from_mapping({"secagg.mode": "sometimes"})


def test_an_old_run_config_keeps_its_meaning() -> None:
    """A config.json written before the mode existed says `secagg.enabled = false`: that stays off."""
    old = RunConfig.from_mapping({"user_dp": {"enabled": True}, "secagg": {"enabled": False}})
    assert not old.secagg.enabled and old.secagg.mode == "off"


def test_the_embedded_flower_defaults_are_auto() -> None:
    """`flwr run .` passes every key of pyproject.toml: it must say 'auto', or every run would turn it off."""
    table = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]["secagg"]
    assert table["mode"] == "auto" and "enabled" not in table
