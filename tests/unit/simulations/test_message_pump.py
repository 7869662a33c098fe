"""The simulation's message pump asks only nodes with an undelivered message, and hands over every such message.

The Ray-engine end-to-end tests (`test_dp_e2e.py`, `secagg/test_secagg_e2e.py`, `test_ray_cluster.py`) run whole
federations through it; here its contract is pinned against a link state whose lookups are counted.
"""

from __future__ import annotations

import threading
from queue import Queue
from types import SimpleNamespace

from flwr.server.superlink.fleet.vce import vce_api
from flwr.server.superlink.linkstate.in_memory_linkstate import InMemoryLinkState

from fedrec.simulations import message_pump


class CountingState(InMemoryLinkState):
    """The in-memory link state's message store and lock, with `get_message_ins` as Flower's contract says:
    up to `limit` undelivered messages of the node, each marked delivered when returned."""

    def __init__(self, messages: dict[str, SimpleNamespace]) -> None:  # no super().__init__: no federation needed
        self.lock = threading.RLock()
        self.message_ins_store = messages
        self.asked: list[int] = []

    def get_message_ins(self, node_id: int, limit: int | None, *, run_id: int | None = None):
        self.asked.append(node_id)
        out = []
        for m in self.message_ins_store.values():
            if m.metadata.dst_node_id == node_id and m.metadata.delivered_at == "" and len(out) < (limit or 1):
                m.metadata.delivered_at = "now"
                out.append(m)
        return out


def _msg(dst: int, delivered: str = "") -> SimpleNamespace:
    return SimpleNamespace(metadata=SimpleNamespace(dst_node_id=dst, delivered_at=delivered))


def _pump(state, mapping: dict[int, int], cycles: int) -> list:
    """Run the pump for `cycles` polls and return what it queued."""
    queue: Queue = Queue()
    stop = threading.Event()
    calls = {"n": 0}
    real_wait = stop.wait

    def wait(timeout: float) -> bool:  # stop after `cycles` polls, without sleeping
        calls["n"] += 1
        if calls["n"] >= cycles:
            stop.set()
        return real_wait(0)

    stop.wait = wait  # type: ignore[method-assign]
    message_pump.pump_messages(state, queue, mapping, stop)
    return [queue.get_nowait() for _ in range(queue.qsize())]


def test_every_undelivered_message_is_queued_and_only_pending_nodes_are_asked() -> None:
    # Prepare: 1,000 nodes, messages for 3 of them (node 7 has two), one already delivered, one for a foreign node
    msgs = {"a": _msg(7), "b": _msg(7), "c": _msg(42), "d": _msg(500, delivered="earlier"), "e": _msg(10_000)}
    state = CountingState(msgs)
    mapping = {n: n for n in range(1000)}
    # Execute: two polls (node 7's second message goes out on the second, as with limit=1 in Flower's loop)
    queued = _pump(state, mapping, cycles=2)
    # Assert
    assert sorted(id(m) for m in queued) == sorted(id(msgs[k]) for k in "abc")
    assert sorted(state.asked) == [7, 7, 42]  # never the 997 idle nodes, the delivered one or the foreign one
    assert msgs["e"].metadata.delivered_at == ""  # not this runtime's node: left for whoever owns it


def test_pending_nodes_reads_undelivered_destinations() -> None:
    state = CountingState({"a": _msg(3), "b": _msg(4, delivered="x"), "c": _msg(3)})
    assert message_pump.pending_nodes(state) == {3}


def test_another_link_state_gets_flowers_own_loop(monkeypatch) -> None:
    seen = []
    monkeypatch.setattr(message_pump, "_FLOWER_PUMP", lambda *args: seen.append(args))
    other = object()
    message_pump.pump_messages(other, Queue(), {1: 0}, threading.Event())
    assert len(seen) == 1 and seen[0][0] is other


def test_install_replaces_the_runtimes_pump(monkeypatch) -> None:
    monkeypatch.setattr(vce_api, "add_messages_to_queue", message_pump._FLOWER_PUMP)
    message_pump.install()
    assert vce_api.add_messages_to_queue is message_pump.pump_messages
