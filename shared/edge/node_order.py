"""Stable client identity: which partition (user) a node holds, asked once at the start of a run.

Why: under Flower's simulation engine every run gives its virtual SuperNodes fresh random node ids, so "the same
clients" cannot mean the same node ids - neither across two runs nor across a resumed run
(`fedrec.server.checkpoint`). What stays the same is the node's `partition-id` (its node config: which user's
data it holds). The server sends every node one query message whose config holds `QUERY_PARTITION`; the node
replies `PARTITION_METRIC` = its partition id, or -1 when its node config has none (a deployed device). The server
orders nodes by partition before any sampling (`fedrec.server.node_order`), so a seeded or checkpointed sampler
picks the same users in every run, and records each row's partition in clients.csv.

Wire contract (keys are only added, never renamed): query config `QUERY_PARTITION` = 1; reply metric
`PARTITION_METRIC` (int, -1 = none).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fedrec.shared.protocol import PARTITION_METRIC, QUERY_PARTITION  # noqa: F401 - re-exported

#: The node-config key Flower's simulation engine sets on every virtual SuperNode.
NODE_PARTITION = "partition-id"


def partition_of(node_config: Mapping[str, Any]) -> int:
    """The node's partition id from its node config, or -1 (a deployed device has none)."""
    value = node_config.get(NODE_PARTITION)
    return -1 if value is None or value == "" else int(value)
