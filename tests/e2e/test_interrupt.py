"""Ctrl-C on `fedrec simulate` (Ray engine): the run stops within seconds, cleanly, and can be resumed.

The signal is sent the way a terminal sends it: SIGINT to the whole foreground process group (the command runs
in its own session here, so the group is the command and everything it started, Ray included).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

FEDREC = str(Path(sys.executable).parent / "fedrec")


def _session(sid: int) -> list[psutil.Process]:
    out = []
    for proc in psutil.process_iter():
        try:
            if os.getsid(proc.pid) == sid:
                out.append(proc)
        except (psutil.Error, ProcessLookupError, PermissionError):
            pass
    return out


def test_ctrl_c_stops_cleanly_and_the_run_resumes(tiny_llama_dir: Path, tmp_path: Path) -> None:
    """One Ctrl-C after round 1: exit 130 within 30 s (it took ~25 s to even notice before), no process of the
    run left (Ray reaped), the checkpoint intact; `--resume` then finishes every round."""
    # Prepare
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "FEDREC_PROGRESS": "0"}
    args = ["simulate", "--data", "synthetic:users=6,items=40,seed=2", "--model", str(tiny_llama_dir),
            "--rounds", "4", "--clients-per-round", "3", "-s", "eval.every=4", "--num-cpus", "2",
            "--run-dir", str(tmp_path), "--run-name", "stopped"]
    proc = subprocess.Popen([FEDREC, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    log = []
    try:
        for line in proc.stdout:  # wait for the first round
            log.append(line)
            if line.startswith("round   1/4"):
                break
        assert proc.poll() is None, "".join(log)
        # Execute
        t0 = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
        seconds = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    # Assert
    output = "".join(log) + rest
    assert proc.returncode == 130, output
    assert seconds < 30, f"took {seconds:.1f} s to stop\n{output}"
    assert "fedrec simulate --resume" in output
    time.sleep(2)
    assert _session(proc.pid) == [], "processes of the run are still alive"
    run = tmp_path / "stopped"
    assert (run / "checkpoint" / "state.safetensors").is_file()
    done = [r["round"] for r in json.loads((run / "rounds.json").read_text())]
    assert done and done[-1] < 4
    resumed = subprocess.run([FEDREC, "simulate", "--resume", str(run), "--num-cpus", "2", "--format", "json"],
                             capture_output=True, text=True, env=env, timeout=400)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    summary = json.loads(resumed.stdout)
    assert summary["status"] == "completed" and summary["rounds"]["released"] == 4
