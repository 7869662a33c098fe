"""`fedrec simulate --preset`: a named preset's settings apply first, the command line's on top."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from fedrec.cli.main import app
from fedrec.shared.run_dir import read_config

runner = CliRunner()


def test_a_preset_applies_and_the_command_line_wins(tiny_llama_dir, tmp_path) -> None:
    """hybrid-nonprivate: no adapter round, popularity and co-occurrence released; `-s` overrides its weight."""
    result = runner.invoke(app, ["simulate", "--preset", "hybrid-nonprivate", "--data",
                                 "synthetic:users=8,items=40,seed=5", "--model", str(tiny_llama_dir), "--run-dir",
                                 str(tmp_path), "--run-name", "p", "--engine", "inprocess", "-s",
                                 "hybrid.weight_gram=2", "-s", "model.history_tokens=16"], terminal_width=200)
    assert result.exit_code == 0, result.output
    cfg = read_config(tmp_path / "p")
    assert cfg.run.rounds == 0 and cfg.hybrid.releases == "popularity,cooccurrence"
    assert cfg.hybrid.weight_gram == 2.0 and cfg.hybrid.gram_k == 500  # the command line, the preset
    summary = json.loads((tmp_path / "p" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["statistics"] == ["popularity", "cooccurrence"]


def test_an_unknown_preset_is_an_input_error(tmp_path) -> None:
    result = runner.invoke(app, ["simulate", "--preset", "no-such-preset", "--run-dir", str(tmp_path)],
                           terminal_width=200)
    assert result.exit_code == 2 and "no-such-preset" in result.output and "hybrid-eps8" in result.output
