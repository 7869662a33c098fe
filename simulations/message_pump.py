"""A cheaper message pump for Flower's simulation runtime, for populations of thousands of virtual clients.

Why: in flwr 1.41 the simulation runtime's extractor thread (`vce_api.add_messages_to_queue`) asks the link state
for pending messages *once per virtual node* every 0.1 s, and each of those calls scans every stored message
(expiry and federation checks included): nodes x messages work per cycle, whether or not anything is pending. With
the 1,892 Last.fm-2K users and 100 messages of a round in the store, that thread kept the server process at
70-78% of a core (`py-spy`: `get_message_ins` / `_check_stored_messages` from `add_messages_to_queue`). Ray runs
the client actors at nice 15, so the busy server thread took that CPU from the clients' training: a round of 100
clients took 51 s and its training loop ran 1.7x slower than in one process.

`pump_messages` keeps the contract of the original (every undelivered message for a node of the run's mapping
is handed to the queue through the link state's own `get_message_ins(node_id, limit=1)`, which marks it
delivered and drops expired ones, then waits 0.1 s) but asks only the nodes that have an undelivered message.
Which nodes those are is read from the in-memory link state's message store under its lock; any other link state
gets Flower's own loop unchanged. `install()` swaps it in for this process's simulation runtime; it is what
`fedrec simulate` does before starting Flower (`flwr run .` starts its own runtime and keeps Flower's loop).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from queue import Queue
from typing import Any

from flwr.server.superlink.fleet.vce import vce_api
from flwr.server.superlink.linkstate.in_memory_linkstate import InMemoryLinkState

_FLOWER_PUMP: Callable[..., None] = vce_api.add_messages_to_queue
POLL_SECONDS = 0.1  # as Flower's own loop


def pending_nodes(state: InMemoryLinkState) -> set[int]:
    """Destination node ids of the messages not yet handed to a client (a snapshot, under the state's lock)."""
    with state.lock:
        return {m.metadata.dst_node_id for m in state.message_ins_store.values() if m.metadata.delivered_at == ""}


def pump_messages(state: Any, queue: Queue, nodes_mapping: dict[int, int], f_stop: threading.Event) -> None:
    """Put the link state's undelivered messages for the mapping's nodes in `queue` until `f_stop` is set."""
    if not isinstance(state, InMemoryLinkState):  # another link state: Flower's loop, unchanged
        _FLOWER_PUMP(state, queue, nodes_mapping, f_stop)
        return
    while not f_stop.is_set():
        for node_id in sorted(pending_nodes(state) & nodes_mapping.keys()):
            for msg in state.get_message_ins(node_id=node_id, limit=1):
                queue.put(msg)
        f_stop.wait(POLL_SECONDS)


def install() -> None:
    """Use `pump_messages` for simulation runtimes started in this process from now on (idempotent)."""
    vce_api.add_messages_to_queue = pump_messages
