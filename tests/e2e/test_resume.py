"""Resuming a killed simulation (`fedrec simulate --resume RUN_DIR`): the checkpoint comes before the public
outputs, a resumed run releases every round exactly once, and it samples the same users as an uninterrupted run.

The kill is real in the last test: a subprocess running the single-process engine is SIGKILLed while round 3 is
in flight (its clients have trained, the server has not released yet), then `fedrec simulate --resume` finishes
it. The pause that makes "mid-round" deterministic is test code: the subprocess wraps the in-process engine's
`send_and_receive` (nothing in fedrec itself waits for a test).
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open
from typer.testing import CliRunner

import fedrec.server.federation as federation
from fedrec.cli.main import app
from fedrec.server.checkpoint import load_checkpoint, state_path
from fedrec.server.sampling import Sampler
from fedrec.shared.config import RunConfig
from fedrec.shared.privacy.ledger import PrivacyLedger
from fedrec.shared.run_dir import private_dir
from fedrec.simulations.simulate import simulate

runner = CliRunner()


def _cfg(model: Path, parent: Path, name: str, changes: dict | None = None) -> RunConfig:
    """8 users, Poisson sampling at q = 1/2, user-level DP: every round releases a noisy aggregate."""
    base = RunConfig.from_mapping({"data.source": "synthetic:users=8,items=40,seed=5", "model.name": str(model),
                                   "hybrid.releases": "",  # adapter rounds only (test_hybrid_e2e: the release phase)
                                   # secure aggregation off (explicitly): a Poisson sample below the SecAgg+
                                   # threshold would abort a round and make the ledgers depend on the secret sample
                                   "secagg.enabled": False,
                                   "run.rounds": 3, "run.clients_per_round": 4, "eval.every": 3,
                                   "run.client_sampling": "poisson", "user_dp.enabled": True,
                                   "user_dp.noise_multiplier": 1.0, "user_dp.clip_norm": 0.5,
                                   "model.history_tokens": 16, "train.examples_per_user": 4, "run.dir": str(parent),
                                   "run.name": name})
    return base.updated(changes or {})


def _adapter_round(run: Path) -> int:
    with safe_open(str(run / "adapter.safetensors"), framework="numpy") as f:
        return int(f.metadata()["server_round"])


def _rounds(run: Path) -> list[int]:
    return [r["round"] for r in json.loads((run / "rounds.json").read_text())]


def _sampled_partitions(run: Path) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for r in csv.DictReader((private_dir(run) / "clients.csv").open()):  # private: these runs use DP
        if r["phase"] == "train":
            out.setdefault(int(r["round"]), []).append(int(r["partition"]))
    return {k: sorted(v) for k, v in out.items()}


def _resume_cli(run: Path, *extra: str):
    return runner.invoke(app, ["simulate", "--resume", str(run), "--engine", "inprocess", *extra], terminal_width=200)


def test_a_crash_before_the_checkpoint_publishes_nothing_of_that_round(tiny_llama_dir, tmp_path, monkeypatch):
    """Killed while writing round 2's checkpoint: no public file shows round 2; resume redoes it once."""
    real_save = federation.save_checkpoint

    def crash_at_round_2(run, ckpt):
        if ckpt.round == 2:
            raise KeyboardInterrupt("killed while writing round 2's checkpoint")
        return real_save(run, ckpt)

    monkeypatch.setattr(federation, "save_checkpoint", crash_at_round_2)
    cfg = _cfg(tiny_llama_dir, tmp_path, "before")
    with pytest.raises(KeyboardInterrupt):
        simulate(cfg, engine="inprocess")
    run = tmp_path / "before"
    assert load_checkpoint(run).round == 1
    assert _rounds(run) == [1] and _adapter_round(run) == 1
    assert PrivacyLedger.load(run / "ledger-user.json").rounds() == [1]
    monkeypatch.undo()

    conflict = _resume_cli(run, "--rounds", "5")  # a resumed run keeps its settings
    assert conflict.exit_code == 2 and "run.rounds: run has 3, given 5" in conflict.output
    result = _resume_cli(run, "--rounds", "3")  # an agreeing setting is fine
    assert result.exit_code == 0, result.output
    assert "resumed from the checkpoint after round 1" in result.output
    assert _rounds(run) == [1, 2, 3] and _adapter_round(run) == 3
    assert PrivacyLedger.load(run / "ledger-user.json").rounds() == [1, 2, 3]
    assert json.loads((run / "config.json").read_text())["resumed"][0]["after_round"] == 1


def test_a_crash_after_the_checkpoint_republishes_and_releases_once(tiny_llama_dir, tmp_path, monkeypatch):
    """Killed between round 2's checkpoint and its public files: resume publishes round 2 from the checkpoint
    (no second release), keeps the audit's secret draw and the devices' record-level ledgers (one entry per round
    trained), and a finished run refuses a second resume."""
    real_publish = federation.publish

    def crash_publishing_round_2(run, ledger, rounds, client_rows, *, adapter, clients, **more):
        if len(rounds) == 2:
            raise KeyboardInterrupt("killed before publishing round 2")
        return real_publish(run, ledger, rounds, client_rows, adapter=adapter, clients=clients, **more)

    monkeypatch.setattr(federation, "publish", crash_publishing_round_2)
    cfg = _cfg(tiny_llama_dir, tmp_path, "after", {"audit.canary_clients": 2, "record_dp.enabled": True,
                                                 "record_dp.delta": 1e-3, "record_dp.accountant": "rdp"})
    with pytest.raises(KeyboardInterrupt):
        simulate(cfg, engine="inprocess")
    run = tmp_path / "after"
    saved = load_checkpoint(run)
    assert saved.round == 2 and saved.audit_seed and [e.round for e in PrivacyLedger.loads(
        saved.user_dp["ledger"])] == [1, 2]
    assert _rounds(run) == [1] and _adapter_round(run) == 1  # round 2 released only into the checkpoint
    truth = json.loads((run / "audit" / "canaries.json").read_text())
    monkeypatch.undo()

    result = _resume_cli(run)
    assert result.exit_code == 0, result.output
    ledger = PrivacyLedger.load(run / "ledger-user.json")
    assert ledger.rounds() == [1, 2, 3] and _rounds(run) == [1, 2, 3] and _adapter_round(run) == 3
    again = json.loads((run / "audit" / "canaries.json").read_text())
    assert again["secret_seed"] == truth["secret_seed"]
    assert [c["included"] for c in again["canary_clients"]] == [c["included"] for c in truth["canary_clients"]]
    assert (run / "audit" / "results.json").is_file() and (run / "privacy-report.json").is_file()
    assert not (run / "devices").exists() and not (run / "clients.csv").exists()  # never published under DP
    for device in (private_dir(run) / "devices").iterdir():  # rounds 1-2 trained before the crash, 3 after resume
        trained = [r for r, parts in _sampled_partitions(run).items() if int(device.name.split("-")[1]) in parts]
        assert PrivacyLedger.load(device / "record-ledger.json").rounds() == trained
    assert not state_path(run).exists()  # finished: the secrets are deleted
    refused = _resume_cli(run)
    assert refused.exit_code == 2 and "finished" in refused.output


DRIVER = """
import json, random, sys, time
from pathlib import Path
import fedrec.server.release as release
import fedrec.server.sampling as sampling
from fedrec.shared.config import RunConfig
from fedrec.server.progress_grid import ProgressGrid  # what the run's loop talks to (it wraps the engine's grid)
from fedrec.simulations.simulate import simulate

cfg = RunConfig.from_mapping(json.loads(sys.argv[1]))
marker, pause_round, seed = Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])

class FixedSecrets:  # the same "secret" seeds in the reference run and in the killed one
    def __init__(self, seed):
        self._r = random.Random(seed)
    def randbits(self, k):
        return self._r.getrandbits(k)

sampling.secrets = release.secrets = FixedSecrets(seed)  # one stream, drawn in the same order
real = ProgressGrid.send_and_receive

def paused(self, messages, *, timeout=None):
    messages = list(messages)
    replies = list(real(self, messages, timeout=timeout))
    if any(m.metadata.message_type == "train" and int(m.content["config"]["server-round"]) == pause_round
           for m in messages):
        marker.write_text("clients trained, nothing released yet")
        time.sleep(600)
    return replies

ProgressGrid.send_and_receive = paused
simulate(cfg, engine="inprocess")
"""


@pytest.mark.slow
def test_sigkill_mid_round_then_resume_matches_an_uninterrupted_run(tiny_llama_dir, tmp_path):
    """SIGKILL during round 2 (clients trained, nothing released), resume from round 1's checkpoint: the same
    partitions are sampled in every round as in an uninterrupted run with the same secret seed, the ledger has
    each round once and equals the reference's, and so does the final adapter: the server's noise continued
    exactly. (Without record-level DP: devices' DP-SGD noise is fresh randomness, not replayable from a seed.)
    Each run has its own process: a process's cached model would carry one run's training into the next."""
    seed = 20260611
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "FLWR_TELEMETRY_ENABLED": "0"}
    procs = []

    def start(name: str, pause_round: int) -> subprocess.Popen:
        cfg = _cfg(tiny_llama_dir, tmp_path, name)
        with (tmp_path / f"{name}.log").open("wb") as log:  # a file, not a pipe: a full pipe would block the run
            procs.append(subprocess.Popen([sys.executable, "-c", DRIVER, json.dumps(cfg.to_flat()), str(marker),
                                           str(pause_round), str(seed)], env=env, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True))
        return procs[-1]

    def output(name: str) -> str:
        return (tmp_path / f"{name}.log").read_text(errors="replace")[-3000:]

    marker = tmp_path / "paused"
    try:
        reference_proc = start("reference", 0)  # uninterrupted, alongside the one that gets killed
        proc = start("killed", 2)
        deadline = time.monotonic() + 240
        while not marker.exists():
            assert proc.poll() is None, output("killed")
            assert time.monotonic() < deadline, "the run never reached round 2"
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
        assert reference_proc.wait(timeout=300) == 0, output("reference")
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=30)
    run, reference = tmp_path / "killed", tmp_path / "reference"
    assert load_checkpoint(run).round == 1 and _rounds(run) == [1]

    resumed = subprocess.run([sys.executable, "-m", "fedrec.cli.main", "simulate", "--resume", str(run), "--engine",
                              "inprocess"], env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert _rounds(run) == [1, 2, 3]
    assert _sampled_partitions(run) == _sampled_partitions(reference)
    ledger, expected = PrivacyLedger.load(run / "ledger-user.json"), PrivacyLedger.load(reference / "ledger-user.json")
    assert ledger.rounds() == [1, 2, 3] and ledger == expected
    with safe_open(str(run / "adapter.safetensors"), framework="numpy") as a, \
            safe_open(str(reference / "adapter.safetensors"), framework="numpy") as b:
        for k in b.keys():  # noqa: SIM118 - safe_open has no __iter__
            np.testing.assert_allclose(a.get_tensor(k), b.get_tensor(k), rtol=1e-5, atol=1e-7)


@pytest.mark.slow
def test_a_run_resumes_on_the_ray_engine_by_partition(tiny_llama_dir, tmp_path, monkeypatch):
    """Killed (single-process engine) before round 2's checkpoint, resumed on Flower's Ray engine, whose virtual
    nodes get new random ids: round 2 samples exactly the partitions the checkpointed secret sampler draws next."""
    real_save = federation.save_checkpoint

    def crash_at_round_2(run, ckpt):
        if ckpt.round == 2:
            raise KeyboardInterrupt("killed while writing round 2's checkpoint")
        return real_save(run, ckpt)

    monkeypatch.setattr(federation, "save_checkpoint", crash_at_round_2)
    cfg = _cfg(tiny_llama_dir, tmp_path, "ray", {"run.rounds": 2, "eval.every": 2})
    with pytest.raises(KeyboardInterrupt):
        simulate(cfg, engine="inprocess")
    monkeypatch.undo()
    run = tmp_path / "ray"
    sampler = Sampler(cfg, population=8, secret=True)
    sampler.restore((load_checkpoint(run).user_dp or {})["sampler"], where="test")
    expected_round_2 = sampler.sample(list(range(8)), 2)  # partitions 0..7, in order

    assert simulate(None, engine="ray", num_cpus=2, resume=run) == run
    assert _rounds(run) == [1, 2] and PrivacyLedger.load(run / "ledger-user.json").rounds() == [1, 2]
    assert _sampled_partitions(run).get(2, []) == expected_round_2
    nodes = {r["node"] for r in csv.DictReader((private_dir(run) / "clients.csv").open()) if r["round"] == "2"}
    assert not nodes & {str(i) for i in range(1, 9)}  # Ray's node ids are not the in-process engine's 1..8
