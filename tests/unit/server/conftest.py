"""A small in-process federation (tiny random Llama, synthetic users) for tests of one server component."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fedrec.client.client_app import app as client_app
from fedrec.server.federation import Federation
from fedrec.shared.config import RunConfig
from fedrec.simulations.inprocess import InProcessGrid


class RecordingGrid(InProcessGrid):
    """The in-process Grid, keeping every reply the server receives (what a test inspects)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.received: list[Any] = []

    def send_and_receive(self, messages, *, timeout=None):  # noqa: ANN001 - Grid's signature
        replies = list(super().send_and_receive(messages, timeout=timeout))
        self.received.extend(replies)
        return replies


@pytest.fixture
def small_federation(tiny_llama_dir: Path, tmp_path: Path) -> Callable[..., tuple[RecordingGrid, Federation]]:
    """`make(users=6, **settings)`: a started Federation on a RecordingGrid, one node per synthetic user."""

    def make(users: int = 6, **settings: Any) -> tuple[RecordingGrid, Federation]:
        cfg = RunConfig.from_mapping({"data.source": f"synthetic:users={users},items=60,seed=5",
                                      "model.name": str(tiny_llama_dir), "model.history_tokens": 16,
                                      "train.examples_per_user": 4, "run.rounds": 2, "run.clients_per_round": users,
                                      "run.dir": str(tmp_path / "runs"), **settings})
        grid = RecordingGrid(client_app, users + cfg.audit.canary_clients)
        return grid, Federation.start(grid, cfg)

    return make
