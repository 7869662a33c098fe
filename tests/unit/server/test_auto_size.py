"""`synthetic:users=auto`: one synthetic user per connected SuperNode (the audit's canary clients aside)."""

from __future__ import annotations

import pytest

from fedrec.server import auto_size
from fedrec.server.auto_size import size_to_nodes
from fedrec.shared.config import RunConfig


class _Nodes:
    def __init__(self, counts: list[int]) -> None:
        self.counts = counts

    def get_node_ids(self):
        n = self.counts.pop(0) if len(self.counts) > 1 else self.counts[0]
        return list(range(1, n + 1))


@pytest.fixture(autouse=True)
def _fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auto_size, "SETTLE_SECONDS", 0.05)


def test_auto_users_follow_the_settled_node_count() -> None:
    """Nodes register one by one: the count is read once it stops changing; canary clients are not users."""
    cfg = RunConfig.from_mapping({"data.source": "synthetic:users=auto,items=50", "audit.canary_clients": 2})
    sized = size_to_nodes(_Nodes([0, 3, 7, 7]), cfg)
    assert sized.data.source == "synthetic:users=5,items=50"
    assert sized.updated({"data.source": cfg.data.source}) == cfg  # nothing else changed


def test_an_explicit_size_is_left_alone_and_no_user_left_is_an_error() -> None:
    cfg = RunConfig.from_mapping({"data.source": "synthetic:users=9,items=50"})
    assert size_to_nodes(_Nodes([2]), cfg) is cfg
    canaries = RunConfig.from_mapping({"audit.canary_clients": 2})  # the default data is users=auto
    with pytest.raises(ValueError, match="2 SuperNode\\(s\\) connected, 2 of them audit canary clients"):
        size_to_nodes(_Nodes([2]), canaries)
