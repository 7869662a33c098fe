"""Progress bars: drawn on a terminal only, never when stdout is not a TTY or progress is switched off; every
advance is a point where a requested stop takes effect."""

from __future__ import annotations

import io
import sys

import pytest

from fedrec.shared import progress
from fedrec.shared.progress import RunInterrupted, task


class _Stdout(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


def _run_a_step() -> None:
    with task("encoding the catalog", total=1000) as bar:
        for _ in range(10):
            bar.advance(100)


@pytest.fixture(autouse=True)
def _progress_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(progress.QUIET_ENV, raising=False)
    progress.clear_stop()


def test_nothing_is_drawn_when_stdout_is_not_a_tty(monkeypatch: pytest.MonkeyPatch) -> None:
    """A pipe or a log file gets no bar, no escape code, nothing at all."""
    out = _Stdout(tty=False)
    monkeypatch.setattr(sys, "stdout", out)
    _run_a_step()
    assert out.getvalue() == ""


def test_a_terminal_gets_a_bar_unless_quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a terminal the step draws (its description shows); `set_quiet` (the commands' -q) switches it off for
    this process and its children (environment)."""
    out = _Stdout(tty=True)
    monkeypatch.setattr(sys, "stdout", out)
    _run_a_step()
    assert "encoding the catalog" in out.getvalue()
    quiet = _Stdout(tty=True)
    monkeypatch.setattr(sys, "stdout", quiet)
    progress.set_quiet()
    try:
        _run_a_step()
    finally:
        progress.set_quiet(False)
    assert quiet.getvalue() == ""


def test_a_requested_stop_interrupts_at_the_next_advance(monkeypatch: pytest.MonkeyPatch) -> None:
    """`request_stop` (the Ctrl-C handler) ends a loop at its next progress point, bar or no bar."""
    monkeypatch.setattr(sys, "stdout", _Stdout(tty=False))
    done = []
    with pytest.raises(RunInterrupted), task("scoring", total=10) as bar:
        for i in range(10):
            if i == 3:
                progress.request_stop()
            bar.advance()
            done.append(i)
    progress.clear_stop()
    assert done == [0, 1, 2]
