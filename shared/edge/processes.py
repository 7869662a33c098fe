"""Child processes of `fedrec server` / `fedrec client` (SuperLink, SuperNode, `flwr log`), stopped by PID.

Flower's daemons start children of their own: the SuperLink a `flower-superexec` (in a new session) that starts a
`flwr-serverapp` per run; the SuperNode a `flower-superexec` that starts a `flwr-clientapp` per message. A
process-group kill misses the ones in other sessions, so `stop` first collects the whole tree of descendants by
PID (`psutil`, while the parent is still alive to name them), then sends SIGTERM to each, waits, and SIGKILLs
what is left. Output goes to a log file, line by line, and optionally to our own stdout; lines can be watched
(`on_line`) to recognise a known failure (e.g. an unregistered node key).

`tool_env` is the environment every Flower tool here runs with: the interpreter's own `bin` first on PATH (the
SuperLink and SuperNode start `flower-superexec` by name), Flower's telemetry and runtime `uv sync` off (it would
install a CUDA torch on every run), Hugging Face offline.

Zombies: `tool_env(reap=reaping_superexec(folder))` makes the SuperLink and the SuperNode start fedrec's
`flower-superexec` (`fedrec.shared.edge.superexec`: Flower's own, reaping the task processes Flower never waits for).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

import psutil

#: Environment defaults of every Flower process started here (the caller's own values win, except PATH's head).
TOOL_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "RAY_USAGE_STATS_ENABLED": "0",
    "PYTHONUNBUFFERED": "1",
}


def tool_bin() -> Path:
    """The folder of this interpreter's console scripts (flwr, flower-superlink, flower-supernode)."""
    return Path(sys.executable).parent


def tool(name: str) -> str:
    """Absolute path of a Flower console script installed beside this interpreter (a clear error if missing)."""
    path = tool_bin() / name
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; is flwr installed in this environment ({sys.prefix})?")
    return str(path)


def tool_env(flwr_home: Path | None = None, extra: Mapping[str, str] | None = None, *,
             reap: Path | None = None) -> dict[str, str]:
    """The environment of a Flower tool; with `reap`, the folder of `reaping_superexec` first on PATH."""
    env = {**TOOL_ENV, **os.environ, **(extra or {})}
    env["PATH"] = os.pathsep.join([*([str(reap)] if reap else []), str(tool_bin()), env.get("PATH", "")])
    if flwr_home is not None:
        env["FLWR_HOME"] = str(flwr_home)
    return env


def reaping_superexec(folder: Path) -> Path:
    """Write `folder/flower-superexec`, which runs `fedrec.shared.edge.superexec` (Flower's SuperExec, reaping its
    children); returns `folder`, for `tool_env(reap=folder)`."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "flower-superexec"
    path.write_text(f"#!{sys.executable}\nfrom fedrec.shared.edge.superexec import main\n\nmain()\n", encoding="utf-8")
    path.chmod(0o755)
    return folder


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it; another process could take it before we do)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_for_port(host: str, port: int, *, timeout: float, alive: Callable[[], bool] = lambda: True) -> None:
    """Return once `host:port` accepts TCP connections; TimeoutError after `timeout` s, RuntimeError if `alive()`
    turns false first (the process that should listen died)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError:
            pass
        if not alive():
            raise RuntimeError(f"the process that should listen on {host}:{port} exited")
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listens on {host}:{port} after {timeout:.0f} s")
        time.sleep(0.3)


def stop_tree(pids: Sequence[int], *, grace: float = 10.0) -> list[int]:
    """SIGTERM every process in `pids` and all their descendants, SIGKILL what outlives `grace` s.

    Returns the PIDs that were still running when stopping began. Descendants are collected before any signal,
    while their parents can still name them.
    """
    procs: dict[int, psutil.Process] = {}
    for pid in pids:
        try:
            root = psutil.Process(pid)
            for p in [root, *root.children(recursive=True)]:
                procs[p.pid] = p
        except psutil.NoSuchProcess:
            continue
    for p in procs.values():
        try:
            p.send_signal(signal.SIGTERM)
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(list(procs.values()), timeout=grace)
    for p in alive:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)
    return sorted(procs)


class ManagedProcess:
    """One child process with its output copied to a log file (and optionally our stdout), stopped by PID."""

    def __init__(self, name: str, argv: Sequence[str], *, env: Mapping[str, str], log_path: Path,
                 cwd: Path | None = None, echo: bool = False, on_line: Callable[[str], None] | None = None) -> None:
        self.name, self.argv, self.log_path = name, list(argv), log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log: IO[str] = open(log_path, "a", encoding="utf-8")  # closed by the copier thread
        self._log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(self.argv)}\n")
        self._log.flush()
        self.proc = subprocess.Popen(self.argv, env=dict(env), cwd=cwd, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     encoding="utf-8", errors="replace", bufsize=1)
        self._echo, self._on_line = echo, on_line
        self._copier = threading.Thread(target=self._copy, name=f"{name}-output", daemon=True)
        self._copier.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _copy(self) -> None:
        assert self.proc.stdout is not None
        try:
            for line in self.proc.stdout:
                self._log.write(line)
                self._log.flush()
                if self._echo:
                    sys.stdout.write(line)
                    sys.stdout.flush()
                if self._on_line is not None:
                    self._on_line(line)
        finally:
            self._log.close()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait(self, timeout: float | None = None) -> int:
        code = self.proc.wait(timeout)
        self._copier.join(timeout=5)
        return code

    def stop(self, grace: float = 10.0) -> None:
        """Stop the process and every descendant it started (by PID); safe to call twice."""
        stop_tree([self.proc.pid], grace=grace)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self._copier.join(timeout=5)
