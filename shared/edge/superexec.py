"""`flower-superexec` that reaps its children: what `fedrec server` and `fedrec client` run as Flower's SuperExec.

flwr 1.41's SuperExec starts one process per task (a `flwr-clientapp` per message on a device, a `flwr-serverapp`
per run on the server) with `subprocess.Popen` and never waits for it, so every finished task stays a zombie until
the next one starts (Python reaps abandoned children only when it creates another), and the last one stays until
the SuperExec exits: on a device that idles between runs, indefinitely. This runs Flower's own SuperExec in the
same process behind a SIGCHLD handler that reaps every exited child at once. The handler is not inherited by the
task processes (a handler resets to the default on exec), and nothing in the SuperExec waits for a task's exit
status (with runtime dependency installation off, tasks are its only children). The SuperLink and the SuperNode
start `flower-superexec` by name, so `fedrec.shared.edge.processes.reaping_superexec` puts a script calling `main`
first on their PATH.
"""

from __future__ import annotations

import os
import signal
import sys


def reap_children(signum: int = signal.SIGCHLD, frame: object = None) -> int:
    """Wait for every child that has exited, without blocking; returns how many were reaped."""
    reaped = 0
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:  # no children at all
            return reaped
        if pid == 0:  # children, none exited
            return reaped
        reaped += 1


def install_reaper() -> None:
    """Reap children as they exit (SIGCHLD), for the life of this process."""
    signal.signal(signal.SIGCHLD, reap_children)


def main() -> None:
    """Flower's `flower-superexec`, with `install_reaper` first."""
    install_reaper()
    from flwr.supercore.cli import flower_superexec

    sys.argv[0] = "flower-superexec"
    sys.exit(flower_superexec())


if __name__ == "__main__":
    main()
