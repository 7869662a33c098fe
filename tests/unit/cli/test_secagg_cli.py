"""`fedrec simulate --secure-aggregation` and the run-config keys reach RunConfig (no simulation is run)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

import fedrec.simulations.simulate as simulate_module
from fedrec.cli.main import app
from fedrec.shared.config import ConfigError, RunConfig


@pytest.mark.parametrize(("flag", "expected"), [(["--secure-aggregation"], True), (["--no-secure-aggregation"], False),
                                                ([], RunConfig().secagg.enabled)])
def test_simulate_flag_sets_secure_aggregation(monkeypatch, flag, expected) -> None:
    """The flag (or its absence: the setting's default) is what the simulation receives."""
    seen = {}

    def fake(cfg, **kwargs):
        seen["cfg"] = cfg
        raise RuntimeError("stop here")

    monkeypatch.setattr(simulate_module, "simulate", fake)
    result = CliRunner().invoke(app, ["simulate", *flag, "--set", "secagg.neighbours=4"], terminal_width=200)
    assert result.exit_code == 1 and "stop here" in result.output
    assert seen["cfg"].secagg.enabled is expected and seen["cfg"].secagg.neighbours == 4


@pytest.mark.parametrize(("key", "value", "pattern"), [
    ("secagg.threshold_fraction", 0.4, r"secagg.threshold_fraction: must be in \[0.5, 1\]"),
    ("secagg.ring_bits", 16, r"secagg.ring_bits: must be 32 or 64"),
    ("secagg.neighbours", -1, r"secagg.neighbours: must be >= 0"),
])
def test_secure_aggregation_settings_are_validated(key, value, pattern) -> None:
    """Out-of-range secure-aggregation settings are ConfigErrors naming the key."""
    with pytest.raises(ConfigError, match=pattern):
        RunConfig.from_mapping({key: value})


def test_secure_aggregation_needs_equal_weights() -> None:
    """The server only sees an unweighted sum: example weights are refused."""
    with pytest.raises(ConfigError, match=r"run.aggregation_weights: must be 'equal' with secagg.enabled"):
        RunConfig.from_mapping({"secagg.enabled": True, "run.aggregation_weights": "examples"})
