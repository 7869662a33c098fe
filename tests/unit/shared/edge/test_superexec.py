"""fedrec's `flower-superexec`: Flower's SuperExec never waits for the task processes it starts; ours reaps them,
so a device idling between runs holds no zombie processes."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from fedrec.shared.edge.processes import reaping_superexec, tool_env

# Like flwr 1.41's SubprocessExecutor: start tasks with Popen and never wait; then idle, as between runs.
LAUNCHER = textwrap.dedent("""
    import subprocess, sys, time
    if sys.argv[1] == "reap":
        from fedrec.shared.edge.superexec import install_reaper
        install_reaper()
    for _ in range(3):
        subprocess.Popen([sys.executable, "-c", "pass"])
        time.sleep(0.5)
    print("started", flush=True)
    time.sleep(60)
""")


@pytest.mark.parametrize("reap", [True, False])
def test_finished_tasks_are_reaped_at_once(reap: bool) -> None:
    proc = subprocess.Popen([sys.executable, "-c", LAUNCHER, "reap" if reap else "no"], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "started"
        time.sleep(1.0)  # the last task has exited by now
        zombies = [c for c in psutil.Process(proc.pid).children() if c.status() == psutil.STATUS_ZOMBIE]
        # without the reaper, Python reaps an abandoned child only when it starts the next one: the last stays
        assert len(zombies) == (0 if reap else 1)
    finally:
        proc.kill()
        proc.wait(timeout=10)
        proc.stdout.close()


def test_the_superlink_and_supernode_find_our_superexec_first(tmp_path: Path) -> None:
    """They start `flower-superexec` by name: with `tool_env(reap=...)` that is ours, and it is Flower's CLI."""
    import shutil

    folder = reaping_superexec(tmp_path / "bin")
    env = tool_env(reap=folder)
    assert shutil.which("flower-superexec", path=env["PATH"]) == str(folder / "flower-superexec")
    out = subprocess.run([str(folder / "flower-superexec"), "--help"], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and "usage: flower-superexec" in out.stdout
