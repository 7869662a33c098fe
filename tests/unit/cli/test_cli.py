"""The `fedrec` command line: recommend with reasons, clear errors on bad input, settings listing."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from fedrec.cli.main import app

runner = CliRunner()


@pytest.mark.e2e  # the shared Ray simulation (tests/conftest.py::sim_run)
def test_recommend_prints_reasons(sim_run, tmp_path):
    """`fedrec recommend` ranks for a history file and gives 'because you played' reasons from that history."""
    _, run = sim_run
    catalog = json.loads((run / "catalog.json").read_text())
    history = tmp_path / "me.csv"
    history.write_text("user,item\n" + "".join(f"me,{catalog['item_ids'][i]}\n" for i in (0, 5, 9)))
    result = runner.invoke(app, ["recommend", "--run", str(run), "--history", str(history), "--top-k", "3"],
                           terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "because you played" in result.output
    played = {catalog["names"][i] for i in (0, 5, 9)}
    rank_rows = [line for line in result.output.splitlines() if re.match(r"│ \d+ +│", line)]
    assert len(rank_rows) == 3  # one table row per recommendation (long cells may wrap onto more lines)
    table = result.output[result.output.index("because you played"):]
    assert any(name in table for name in played)
    artists = [line.split("│")[2].strip() for line in rank_rows]
    assert not set(artists) & played  # nothing already played is recommended


@pytest.mark.parametrize("name", ["bad.csv", "[bold]x:cd:y.csv"])
@pytest.mark.e2e
def test_recommend_bad_history_names_file_and_line(sim_run, tmp_path, name):
    """A malformed history file stops with exit code 2 and names the file and line, verbatim: a name with rich
    markup or an emoji code (hex fingerprints hold ':cd:') is printed as it is."""
    _, run = sim_run
    bad = tmp_path / name
    bad.write_text("user,item,weight\nme,a001,3\nme,a002,lots\n")
    result = runner.invoke(app, ["recommend", "--run", str(run), "--history", str(bad)], terminal_width=400)
    assert result.exit_code == 2
    assert f"{name}:3" in result.output.replace("\n", "")


@pytest.mark.e2e
def test_recommend_prints_bracketed_artist_names(sim_run, tmp_path, monkeypatch):
    """Last.fm has an artist called "[unknown]": rich markup must not swallow it (it printed an empty cell)."""
    from fedrec.shared.api import Recommendation, Recommender

    _, run = sim_run
    catalog = json.loads((run / "catalog.json").read_text())
    history = tmp_path / "me.csv"
    history.write_text(f"user,item\nme,{catalog['item_ids'][0]}\n")
    fake = [Recommendation(item="[unknown]", item_id="x", score=1.0, reasons=["[red]x"], tags=["[bold]rock"])]
    monkeypatch.setattr(Recommender, "recommend", lambda *a, **k: fake)
    result = runner.invoke(app, ["recommend", "--run", str(run), "--history", str(history)], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "[unknown]" in result.output and "[bold]rock" in result.output and "[red]x" in result.output


def test_simulate_rejects_unknown_setting():
    """An unknown --set key is refused before anything starts, naming the key."""
    result = runner.invoke(app, ["simulate", "--set", "train.learning_rat=0.1"], terminal_width=200)
    assert result.exit_code == 2
    assert "train.learning_rat" in result.output


def test_settings_lists_every_setting():
    """`fedrec settings` shows every RunConfig key."""
    from fedrec.shared.config import RunConfig

    result = runner.invoke(app, ["settings"], terminal_width=250)
    assert result.exit_code == 0
    for key in RunConfig().to_flat():
        assert key in result.output


def test_simulate_in_process_engine_runs_the_same_apps(tiny_llama_dir, tmp_path):
    """`--engine inprocess` runs the real server loop and ClientApp in this process and writes a normal run."""
    result = runner.invoke(app, ["simulate", "--engine", "inprocess", "--data", "synthetic:users=6,items=40,seed=1",
                                 "--model", str(tiny_llama_dir), "--rounds", "1", "--clients-per-round", "3",
                                 "--run-dir", str(tmp_path), "--run-name", "inproc"], terminal_width=200)
    assert result.exit_code == 0, result.output
    rounds = json.loads((tmp_path / "inproc" / "rounds.json").read_text())
    assert rounds[0]["status"] == "ok" and rounds[0]["updates"] == 3 and "eval_ndcg@10" in rounds[0]


def test_simulate_rejects_an_unknown_engine():
    result = runner.invoke(app, ["simulate", "--engine", "spark"], terminal_width=200)
    assert result.exit_code == 2 and "--engine must be 'ray' or 'inprocess'" in result.output
