"""Progress bars for the steps that take more than a few seconds, and the stop request that interrupts them.

Encoding a 17k-item catalog takes about a minute on 2 cores, so does the final evaluation of 1,877 users; a round
of 100 clients half a minute. `task` shows such a step as a `rich` progress bar, and draws nothing at all when
stdout is not a terminal (a log file, a pipe, a Ray worker, a test) or when progress is switched off
(`set_quiet`, the `-q` option of the commands, or `FEDREC_PROGRESS=0` in the environment, which child processes
inherit). Bars opened while another is showing join the same display, from any thread, so a command's round bar
and the catalog encoding started under it share one live area.

Every `advance` also checks whether a stop was requested (`request_stop`, which the Ctrl-C handler of `fedrec
simulate` calls) and raises `RunInterrupted` if so: every long loop that reports progress is also a point where
a run can stop cleanly, between two batches, never inside a checkpoint write.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

QUIET_ENV = "FEDREC_PROGRESS"  # "0": no progress bars in this process and its children


class RunInterrupted(Exception):
    """A stop was requested (Ctrl-C): the current step ends at its next progress point."""


_stop = threading.Event()
_lock = threading.Lock()
_live: dict[str, object] = {}  # "progress": the shared rich Progress while any task is open, "open": count


def request_stop() -> None:
    """Ask every running loop of this process to stop at its next progress point (signal-handler safe)."""
    _stop.set()


def stop_requested() -> bool:
    return _stop.is_set()


def clear_stop() -> None:
    _stop.clear()


def check_stop() -> None:
    """Raise `RunInterrupted` if a stop was requested."""
    if _stop.is_set():
        raise RunInterrupted("stopped on request (Ctrl-C)")


def set_quiet(quiet: bool = True) -> None:
    """Switch progress bars off (or back on) for this process and the processes it starts."""
    if quiet:
        os.environ[QUIET_ENV] = "0"
    else:
        os.environ.pop(QUIET_ENV, None)


def enabled() -> bool:
    """Bars are drawn only on a terminal, and not when switched off."""
    if os.environ.get(QUIET_ENV) == "0":
        return False
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):  # a closed or replaced stdout
        return False


class Task:
    """One step's bar: `advance(n)`, `update(total=, description=)`. Does nothing but check for a stop when off."""

    def __init__(self, progress: object | None, task_id: int | None) -> None:
        self._progress, self._id = progress, task_id

    def advance(self, n: float = 1) -> None:
        check_stop()
        if self._progress is not None:
            self._progress.advance(self._id, n)

    def update(self, **fields: object) -> None:
        """rich's `Progress.update` fields: total, completed, description."""
        check_stop()
        if self._progress is not None:
            self._progress.update(self._id, **fields)


def _open_display() -> object:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    if "progress" not in _live:
        progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            console=Console(emoji=False), transient=True)
        progress.start()
        _live["progress"], _live["open"] = progress, 0
    _live["open"] = int(_live["open"]) + 1
    return _live["progress"]


def _close_display() -> None:
    _live["open"] = int(_live["open"]) - 1
    if _live["open"] == 0:
        _live.pop("progress").stop()  # type: ignore[attr-defined]


@contextmanager
def task(description: str, total: float | None) -> Iterator[Task]:
    """A progress bar for one step (`total` units; None: no bar, only stop checks)."""
    if total is None or not enabled():
        yield Task(None, None)
        return
    with _lock:
        progress = _open_display()
        task_id = progress.add_task(description, total=total)  # type: ignore[attr-defined]
    try:
        yield Task(progress, task_id)
    finally:
        with _lock:
            progress.remove_task(task_id)  # type: ignore[attr-defined]
            _close_display()
