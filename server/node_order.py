"""Order the connected nodes by the partition (user) each holds, so sampling picks users, not random node ids.

The handshake (`fedrec.shared.edge.node_order`) asks every node once for its partition id. All nodes answering with
distinct ids >= 0 (a simulation): nodes are ordered by partition, and a row's partition is recorded next to its
node id. All answering -1 (a deployment, where devices have no partition): node-id order, as before. Anything
else (a mix, duplicates, errors while some nodes do report a partition) is an error: a sampler over a silently
different order would pick different users after a resume.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from fedrec.shared.protocol import PARTITION_METRIC, QUERY_PARTITION

log = logging.getLogger("fedrec.server")


class NodeOrderError(RuntimeError):
    """The nodes' partition ids are inconsistent (duplicates, or only some nodes have one)."""


@dataclass(frozen=True)
class NodeOrder:
    """The run's nodes in a stable order, with each node's partition when there is one."""

    nodes: list[int]
    partitions: dict[int, int] = field(default_factory=dict)  # node id -> partition; empty in a deployment
    _owner: dict[int, int] = field(init=False, repr=False, compare=False)  # partition -> node id

    def __post_init__(self) -> None:
        object.__setattr__(self, "_owner", {p: n for n, p in self.partitions.items()})

    @property
    def by_partition(self) -> bool:
        return bool(self.partitions)

    def key(self, node: int) -> int:
        """The identity that survives a restart: the partition id, else (deployment) the node id."""
        return self.partitions[node] if self.partitions else node

    def node(self, key: int) -> int:
        """The current node id of identity `key` (inverse of `key`)."""
        if not self.partitions:
            return key
        if key not in self._owner:
            raise KeyError(f"no connected node holds partition {key}")
        return self._owner[key]

    def partition(self, node: int) -> int | None:
        return self.partitions.get(node)

    def annotate(self, row: dict[str, Any]) -> dict[str, Any]:
        """`row` with its node's partition right after the node id (clients.csv), so runs can be compared."""
        if not self.partitions or "node" not in row or "partition" in row:
            return row
        out: dict[str, Any] = {}
        for k, v in row.items():
            out[k] = v
            if k == "node":
                out["partition"] = self.partitions.get(int(v))
        return out


def order_nodes(grid: Grid, nodes: list[int]) -> NodeOrder:
    """Ask every node for its partition (one query each) and order the nodes by it."""
    messages = [Message(RecordDict({"config": ConfigRecord({QUERY_PARTITION: 1})}), dst_node_id=n,
                        message_type=MessageType.QUERY) for n in nodes]
    found: dict[int, int] = {}
    problems: list[str] = []
    answered: set[int] = set()
    for reply in grid.send_and_receive(messages):
        node = reply.metadata.src_node_id
        answered.add(node)
        if reply.has_error():
            problems.append(f"node {node}: {reply.error.reason[:200]}")
            continue
        metrics = reply.content.get("metrics") or {}
        if PARTITION_METRIC not in metrics:
            problems.append(f"node {node}: reply without {PARTITION_METRIC!r}")
            continue
        found[node] = int(metrics[PARTITION_METRIC])
    problems += [f"node {n}: no reply" for n in nodes if n not in answered]
    with_partition = {n: p for n, p in found.items() if p >= 0}
    if not with_partition:
        if problems:
            log.warning("node order: %d node(s) did not answer the partition query (%s); using node-id order",
                        len(problems), "; ".join(problems[:3]))
        return NodeOrder(nodes=sorted(nodes))
    if problems or len(with_partition) != len(nodes):
        missing = [n for n in nodes if n not in with_partition]
        raise NodeOrderError(f"partition handshake: {len(with_partition)} of {len(nodes)} nodes hold a partition; "
                             f"without one: {missing[:5]}; {'; '.join(problems[:3]) or 'no errors'}")
    owner: dict[int, int] = {}
    for n, p in with_partition.items():
        if p in owner:
            raise NodeOrderError(f"partition handshake: nodes {owner[p]} and {n} both hold partition {p}")
        owner[p] = n
    return NodeOrder(nodes=sorted(nodes, key=lambda n: with_partition[n]), partitions=with_partition)
