"""A `Grid` that reports each reply as it arrives and stops waiting when a stop was requested.

Flower's `send_and_receive` pushes the messages and polls until every reply is in, silently: a round of 100
clients shows nothing for half a minute, and a Ctrl-C cannot reach a server thread that waits there. This wrapper
does the same push-then-poll loop (Flower's own, `InMemoryGrid.send_and_receive`) and, on each poll, emits a
`clients` event (phase, replies so far, messages sent) and checks for a stop request
(`fedrec.shared.progress.check_stop`), which raises `RunInterrupted` in the server loop. Everything else is
passed to the wrapped grid unchanged.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from flwr.app import Message
from flwr.serverapp import Grid

from fedrec.shared.progress import check_stop

POLL_SECONDS = 0.1  # as Flower's grids


class ProgressGrid(Grid):
    """Wraps `grid`; `on_event("clients", {"phase", "done", "total"})` after every poll that got replies."""

    def __init__(self, grid: Grid, on_event: Callable[[str, dict[str, Any]], None]) -> None:
        self._grid, self._emit = grid, on_event

    def __getattr__(self, name: str) -> Any:  # anything a grid has beyond the abstract API
        return getattr(self._grid, name)

    def set_run(self, run: Any) -> None:
        self._grid.set_run(run)

    @property
    def run(self) -> Any:
        return self._grid.run

    def create_message(self, *args: Any, **kwargs: Any) -> Message:
        return self._grid.create_message(*args, **kwargs)

    def get_node_ids(self) -> Iterable[int]:
        return self._grid.get_node_ids()

    def get_nodes(self) -> Iterable[Any]:
        return self._grid.get_nodes()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self._grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self._grid.pull_messages(message_ids)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        messages = list(messages)
        phase = messages[0].metadata.message_type if messages else ""
        pending = set(self._grid.push_messages(messages))
        total = len(pending)
        self._emit("clients", {"phase": phase, "done": 0, "total": total})
        end = time.time() + (timeout or 0.0)
        replies: list[Message] = []
        while pending and (timeout is None or time.time() < end):
            check_stop()
            got = list(self._grid.pull_messages(pending))
            if got:
                replies.extend(got)
                pending.difference_update(m.metadata.reply_to_message_id for m in got)
                self._emit("clients", {"phase": phase, "done": len(replies), "total": total})
            if pending:
                time.sleep(POLL_SECONDS)
        return replies
