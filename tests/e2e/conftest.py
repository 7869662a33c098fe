"""Everything under tests/e2e/ is a whole run (a Flower simulation, subprocesses, a wheel build): marked `e2e`, so
`pytest -m "not e2e"` is the fast loop and the README's test command still runs everything."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.e2e)
