"""`--format json` everywhere (simulate, recommend, score), `fedrec export`, and the real defaults in `--help`.

One tiny in-process run (a random 2-layer Llama, 6 synthetic users, 1 round) serves every test here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedrec.cli.main import app
from fedrec.cli.schemas import schemas
from fedrec.shared.privacy.report.schema import validate

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_run(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """(run directory, the JSON document `fedrec simulate --format json` printed)."""
    parent = tmp_path_factory.mktemp("runs")
    result = runner.invoke(app, ["simulate", "--engine", "inprocess", "--data", "synthetic:users=6,items=40,seed=1",
                                 "--model", str(tiny_llama_dir), "--rounds", "1", "--clients-per-round", "3",
                                 "--run-dir", str(parent), "--run-name", "tiny", "--format", "json"])
    assert result.exit_code == 0, result.output
    return parent / "tiny", json.loads(result.stdout)


def _history(run: Path, tmp_path: Path, items: tuple[int, ...] = (0, 5, 9)) -> tuple[Path, dict]:
    catalog = json.loads((run / "catalog.json").read_text())
    path = tmp_path / "me.csv"
    path.write_text("user,item\n" + "".join(f"me,{catalog['item_ids'][i]}\n" for i in items))
    return path, catalog


def test_simulate_json_is_the_run_summary(tiny_run) -> None:
    """stdout is exactly one JSON document, valid by its schema, equal to the run's summary.json, with the
    popularity baseline on the same split beside the model's figures."""
    run, doc = tiny_run
    validate(doc, schemas()["summary"], root="summary")
    assert doc == json.loads((run / "summary.json").read_text())
    assert doc["status"] == "completed" and doc["rounds"]["released"] == 1
    assert doc["evaluation"]["users"] == 6 and set(doc["baselines"]["popularity"]) >= {"ndcg@10", "hr@10"}
    assert doc["export"] == "model" and (run / "model" / "adapter_config.json").is_file()


def test_recommend_json(tiny_run, tmp_path: Path) -> None:
    run, _ = tiny_run
    history, catalog = _history(run, tmp_path)
    result = runner.invoke(app, ["recommend", "--run", str(run), "--history", str(history), "--top-k", "4",
                                 "--format", "json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    validate(doc, schemas()["recommend"], root="recommend")
    assert [r["rank"] for r in doc["recommendations"]] == [1, 2, 3, 4] and doc["history_items"] == 3
    assert not {r["item_id"] for r in doc["recommendations"]} & {catalog["item_ids"][i] for i in (0, 5, 9)}


def test_score_ranks_candidates_from_a_file(tiny_run, tmp_path: Path) -> None:
    """`fedrec score --candidates` (one name or id per line) gives one score per candidate, in file order, equal
    to the Python API's; an unknown candidate is an error naming it."""
    from fedrec.shared.api import Recommender

    run, _ = tiny_run
    history, catalog = _history(run, tmp_path)
    names = [catalog["names"][1], catalog["item_ids"][2], catalog["names"][3]]
    cands = tmp_path / "candidates.txt"
    cands.write_text("# three candidates\n" + "\n".join(names) + "\n\n")
    result = runner.invoke(app, ["score", "--run", str(run), "--history", str(history), "--candidates", str(cands),
                                 "--format", "json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    validate(doc, schemas()["score"], root="score")
    assert [c["item_id"] for c in doc["candidates"]] == [catalog["item_ids"][i] for i in (1, 2, 3)]
    want = Recommender.load(run).score([catalog["item_ids"][i] for i in (0, 5, 9)], names)
    assert [c["score"] for c in doc["candidates"]] == pytest.approx(want)
    assert sorted(c["rank"] for c in doc["candidates"]) == [1, 2, 3]
    cands.write_text("Nobody Atall\n")
    bad = runner.invoke(app, ["score", "--run", str(run), "--history", str(history), "--candidates", str(cands)],
                        terminal_width=200)
    assert bad.exit_code == 2 and "'Nobody Atall'" in bad.output


def test_export_command_and_recommend_from_the_export(tiny_run, tmp_path: Path) -> None:
    """`fedrec export RUN OUT` writes a PEFT directory that `fedrec recommend --run OUT` ranks with, identically."""
    run, _ = tiny_run
    out = tmp_path / "exported"
    result = runner.invoke(app, ["export", str(run), str(out)], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert {"adapter_config.json", "adapter_model.safetensors", "fedrec_state.safetensors", "README.md",
            "catalog_embeddings.safetensors"} <= {p.name for p in out.iterdir()}
    history, _ = _history(run, tmp_path)
    docs = [json.loads(runner.invoke(app, ["recommend", "--run", str(where), "--history", str(history),
                                           "--format", "json"]).stdout)["recommendations"] for where in (run, out)]
    assert docs[0] == docs[1]


def test_recommend_format_names_the_renamed_history_option(tiny_run, tmp_path: Path) -> None:
    """`--format csv` (the old spelling of the history's format) says to use --data-format."""
    run, _ = tiny_run
    history, _ = _history(run, tmp_path)
    result = runner.invoke(app, ["recommend", "--run", str(run), "--history", str(history), "--format", "csv"],
                           terminal_width=200)
    assert result.exit_code == 2 and "--data-format" in result.output


def test_help_shows_the_real_defaults() -> None:
    """`--rounds` and `--clients-per-round` show the settings' defaults (20, 10), not the unset marker 0."""
    from fedrec.shared.config import RunConfig

    result = runner.invoke(app, ["simulate", "--help"], env={"COLUMNS": "250"})
    text = " ".join(result.output.replace("│", " ").split())
    cfg = RunConfig()
    assert f"federated rounds [default: ({cfg.run.rounds})]" in text
    assert f"clients sampled per round [default: ({cfg.run.clients_per_round})]" in text
    assert "[default: 0]" not in text


def test_a_run_whose_rounds_all_failed_exits_1_with_a_failed_summary(tiny_llama_dir: Path, tmp_path: Path) -> None:
    """Every device declines (a record-level budget no round fits): exit 1, and the JSON on stdout is the run's
    summary with status `failed` and nothing released; the error goes to stderr."""
    result = runner.invoke(app, ["simulate", "--engine", "inprocess", "--data", "synthetic:users=4,items=40,seed=1",
                                 "--model", str(tiny_llama_dir), "--rounds", "2", "--clients-per-round", "3",
                                 "-s", "record_dp.enabled=true", "-s", "record_dp.epsilon_max=0.001",
                                 "--run-dir", str(tmp_path), "--format", "json"])
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    validate(doc, schemas()["summary"], root="summary")
    assert doc["status"] == "failed" and doc["rounds"]["released"] == 0 and doc["adapter"] is None
    assert "AllRoundsFailed" in result.stderr


def test_recommend_speaks_the_models_domain(tiny_run, tmp_path: Path) -> None:
    """A films model prints films and "because you watched", not artists."""
    import shutil

    run, _ = tiny_run
    films = tmp_path / "films"
    shutil.copytree(run / "model", films)
    doc = json.loads((films / "fedrec_config.json").read_text())
    doc["config"]["data"]["domain"] = "movies"
    (films / "fedrec_config.json").write_text(json.dumps(doc))
    history, _ = _history(run, tmp_path)
    result = runner.invoke(app, ["recommend", "--run", str(films), "--history", str(history)], terminal_width=250)
    assert result.exit_code == 0, result.output
    assert "films in history" in result.output and "because you watched" in result.output
    assert "artist" not in result.output


def test_holdout_none_trains_on_everything_and_evaluates_nobody(tiny_llama_dir: Path, tmp_path: Path) -> None:
    """`--holdout none`: a normal run and export, no evaluation, no baseline (there is no held-out item)."""
    result = runner.invoke(app, ["simulate", "--engine", "inprocess", "--data", "synthetic:users=4,items=40,seed=1",
                                 "--model", str(tiny_llama_dir), "--rounds", "1", "--clients-per-round", "2",
                                 "--holdout", "none", "--run-dir", str(tmp_path), "--format", "json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["status"] == "completed" and doc["evaluation"] is None and doc["baselines"] == {}
    assert doc["export"] == "model"


def test_server_help_shows_the_settings_defaults() -> None:
    """`fedrec server --help` too: the rounds and clients per round of RunConfig, not 0 (kept equal by this test)."""
    from fedrec.shared.config import RunConfig

    text = " ".join(runner.invoke(app, ["server", "--help"], env={"COLUMNS": "250"}).output.replace("│", " ").split())
    assert f"federated rounds [default: ({RunConfig().run.rounds} (run.rounds))]" in text
    assert f"[default: ({RunConfig().run.clients_per_round} (run.clients_per_round))]" in text
