"""What `fedrec server` is asked to do (`ServerPlan`) and how it fails (`LaunchError`).

The launch is split by job (`app_files`, `superlink`, `flwr_control`, `nodes`, and `launch` to run them in order);
they all take the plan and raise the one error, which the CLI turns into a message and an exit code. Both live
here, below every one of those modules, so that none of them has to import the orchestration.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Say = Callable[[str], None]


class LaunchError(RuntimeError):
    """The server cannot start or its run failed; the message says which step and why."""


@dataclass
class ServerPlan:
    """Everything `fedrec server` needs; `settings` are RunConfig keys (kebab-case) given on the command line."""

    certs: Path
    settings: dict[str, Any]
    work_dir: Path = Path("fedrec-server")
    host: str = "127.0.0.1"
    port: int = 8000
    flwr_home: Path | None = None  # None: $FLWR_HOME, else <work-dir>/flwr-home
    register: list[Path] = field(default_factory=list)
    wait_timeout: float = 0.0  # seconds to wait for the N nodes (0 = no limit)
    startup_timeout: float = 60.0

