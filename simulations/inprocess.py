"""A single-process engine: the real ServerApp loop and the real ClientApp, with a `Grid` that calls the client
app directly instead of going through a SuperLink, Ray actors or gRPC.

Why: Flower's simulation engine runs every virtual client in a Ray actor, which is the right model of a
deployment (separate processes, serialised messages) but costs process start-up, a second copy of the model per
worker and message serialisation. For benchmarks on one accelerator (one process owning the GPU) and for sweeps,
this engine runs exactly the same code path - `server.federation.run_federation` drives the rounds through the
`Grid` API, and each message is handled by `fedrec.client.client_app.app` with a `Context` that persists per
node (so `context.state`, e.g. a device's record-level ledger, lives across rounds as it does under Flower) -
in one process. What it does not model: network, serialisation of messages, process isolation between clients.
Nothing a client returns is shared by reference with the server beyond what a reply message carries.

A client handler that raises becomes an error reply (as a crashed ClientApp does under Flower), so dropouts and
failures take the same path in the server loop.
"""

from __future__ import annotations

import itertools
import traceback
from collections.abc import Iterable

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

#: Error code of a reply whose ClientApp raised (Flower's ErrorCode.CLIENT_APP_RAISED_EXCEPTION).
CLIENT_APP_RAISED = 1


class InProcessGrid(Grid):
    """`num_nodes` virtual SuperNodes with node ids 1..N and node config {partition-id, num-partitions}.

    `node_config` is added to every node's config; `node_configs` (one dict per node) instead gives each node
    exactly its own config, as deployed SuperNodes have (`--node-config`, no partition): e.g. a deployed device's
    `data-path` and `state-dir`.
    """

    def __init__(self, client_app: ClientApp, num_nodes: int, *, run_id: int = 1,
                 node_config: dict[str, object] | None = None,
                 node_configs: list[dict[str, object]] | None = None) -> None:
        if node_configs is not None and len(node_configs) != num_nodes:
            raise ValueError(f"node_configs: {len(node_configs)} configs for {num_nodes} nodes")
        self._app = client_app
        self._run = Run.create_empty(run_id)
        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = run_id, 0, 0  # the server's identity
        configs = node_configs or [{"partition-id": i, "num-partitions": num_nodes, **(node_config or {})}
                                   for i in range(num_nodes)]
        self._contexts = {
            i + 1: Context(run_id=run_id, node_id=i + 1, node_config=dict(configs[i]), state=RecordDict(),
                           run_config={})
            for i in range(num_nodes)
        }
        self._ids = itertools.count(1)
        self._pending: dict[str, Message] = {}

    # -- Grid API -------------------------------------------------------------------------------------------------
    def set_run(self, run: Run) -> None:  # pragma: no cover - the engine owns its run
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
                       ttl: float | None = None) -> Message:
        msg = Message(content, dst_node_id=dst_node_id, message_type=message_type, ttl=ttl)
        msg.metadata.__dict__["_group_id"] = group_id
        return msg

    def get_node_ids(self) -> Iterable[int]:
        return list(self._contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for msg in messages:
            mid = f"m{next(self._ids)}"
            msg.metadata.__dict__["_message_id"] = mid  # as Flower's own link state does (no public setter)
            self._pending[mid] = msg
            ids.append(mid)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._handle(self._pending.pop(mid)) for mid in message_ids if mid in self._pending]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        return self.pull_messages(self.push_messages(messages))

    # -- delivery -------------------------------------------------------------------------------------------------
    def _handle(self, msg: Message) -> Message:
        context = self._contexts.get(msg.metadata.dst_node_id)
        if context is None:
            return Message(Error(code=CLIENT_APP_RAISED, reason=f"no node {msg.metadata.dst_node_id}"), reply_to=msg)
        try:
            reply = self._app(msg, context)
        except Exception as e:  # noqa: BLE001 - a crashed client is an error reply, as under Flower
            reason = f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=3)}"
            return Message(Error(code=CLIENT_APP_RAISED, reason=reason), reply_to=msg)
        reply.metadata.__dict__["_message_id"] = f"r{next(self._ids)}"
        return reply
