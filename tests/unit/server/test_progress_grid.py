"""The reporting grid: replies counted as they arrive, a stop request ends the wait, Flower's timeout kept."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from fedrec.server.progress_grid import ProgressGrid
from fedrec.shared import progress
from fedrec.shared.progress import RunInterrupted


class _TrickleGrid:
    """Answers one pushed message per pull (a slow federation); never answers with `silent`."""

    def __init__(self, silent: bool = False) -> None:
        self.silent, self.pending = silent, []

    def push_messages(self, messages):
        self.pending = [f"m{i}" for i, _ in enumerate(messages)]
        return list(self.pending)

    def pull_messages(self, ids):
        if self.silent or not self.pending:
            return []
        mid = self.pending.pop(0)
        return [SimpleNamespace(metadata=SimpleNamespace(reply_to_message_id=mid))]


def _messages(n: int) -> list[SimpleNamespace]:
    return [SimpleNamespace(metadata=SimpleNamespace(message_type="train")) for _ in range(n)]


def test_each_reply_is_reported_as_it_arrives() -> None:
    events = []
    grid = ProgressGrid(_TrickleGrid(), lambda kind, payload: events.append((kind, payload["done"], payload["total"])))
    replies = list(grid.send_and_receive(_messages(3)))
    assert [r.metadata.reply_to_message_id for r in replies] == ["m0", "m1", "m2"]
    assert events == [("clients", 0, 3), ("clients", 1, 3), ("clients", 2, 3), ("clients", 3, 3)]


def test_a_stop_request_ends_the_wait_for_clients() -> None:
    """Without replies the server would wait forever (timeout None); a stop request ends it within a poll."""
    grid = ProgressGrid(_TrickleGrid(silent=True), lambda kind, payload: progress.request_stop())
    t0 = time.perf_counter()
    try:
        with pytest.raises(RunInterrupted):
            grid.send_and_receive(_messages(2))
    finally:
        progress.clear_stop()
    assert time.perf_counter() - t0 < 1.0


def test_the_timeout_is_kept() -> None:
    grid = ProgressGrid(_TrickleGrid(silent=True), lambda kind, payload: None)
    t0 = time.perf_counter()
    assert list(grid.send_and_receive(_messages(2), timeout=0.3)) == []
    assert 0.25 < time.perf_counter() - t0 < 2.0
