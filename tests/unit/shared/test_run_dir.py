"""Run directories: never overwritten, atomic writes, rows as JSON and CSV."""

from __future__ import annotations

import json

import pytest

from fedrec.shared.config import RunConfig
from fedrec.shared.run_dir import clients_dir, new_run_dir, private_dir, read_config, write_config, write_rows


def test_unnamed_runs_in_the_same_second_get_distinct_dirs(tmp_path):
    """Two unnamed runs never share a directory."""
    cfg = RunConfig.from_mapping({"run.dir": str(tmp_path)})
    a, b = new_run_dir(cfg), new_run_dir(cfg)
    assert a != b and a.is_dir() and b.is_dir()


def test_named_run_is_never_overwritten(tmp_path):
    """A named run directory that already holds files is refused, naming it."""
    cfg = RunConfig.from_mapping({"run.dir": str(tmp_path), "run.name": "mine"})
    run = new_run_dir(cfg)
    write_config(run, cfg)
    with pytest.raises(FileExistsError, match="mine"):
        new_run_dir(cfg)


def test_config_round_trip_and_rows(tmp_path):
    """config.json reads back to the same RunConfig; rows land in JSON and CSV with the union of columns."""
    cfg = RunConfig.from_mapping({"run.dir": str(tmp_path), "run.name": "r", "model.lora_rank": 4})
    run = new_run_dir(cfg)
    write_config(run, cfg)
    assert read_config(run) == cfg
    write_rows(run, "rounds", [{"round": 1, "a": 1.5}, {"round": 2, "b": "x"}])
    assert json.loads((run / "rounds.json").read_text())[1]["b"] == "x"
    assert (run / "rounds.csv").read_text().splitlines() == ["round,a,b", "1,1.5,", "2,,x"]
    assert not [p for p in run.iterdir() if p.name.startswith(".")]  # no temporary files left behind


def test_per_client_rows_are_private_under_any_privacy_setting(tmp_path):
    """Without a privacy setting clients.* stay in the run directory; with one they go to <run.dir>/private/<run>
    (0700, outside the publishable run directory), and "private" is not a run name."""
    import stat

    run = new_run_dir(RunConfig.from_mapping({"run.dir": str(tmp_path), "run.name": "r"}))
    assert clients_dir(run, RunConfig()) == run
    for setting in ("record_dp.enabled", "user_dp.enabled", "secagg.enabled"):
        assert clients_dir(run, RunConfig.from_mapping({setting: True})) == tmp_path / "private" / "r"
    assert stat.S_IMODE(private_dir(run).stat().st_mode) == 0o700
    assert stat.S_IMODE(private_dir(run).parent.stat().st_mode) == 0o700
    with pytest.raises(FileExistsError, match="reserved"):
        new_run_dir(RunConfig.from_mapping({"run.dir": str(tmp_path), "run.name": "private"}))
