"""The partition handshake: nodes with arbitrary ids are ordered by the partition they hold; a deployment (no
partitions) keeps node-id order; inconsistent answers are refused."""

from __future__ import annotations

import pytest
from flwr.app import Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedrec.client.client_app import app as fedrec_client_app
from fedrec.server.empirical_audit import AuditError, canary_roles
from fedrec.server.node_order import NodeOrder, NodeOrderError, order_nodes
from fedrec.shared.edge.node_order import partition_of
from fedrec.shared.protocol import PARTITION_METRIC
from fedrec.simulations.inprocess import InProcessGrid


def _grid(answers: dict[int, int]) -> InProcessGrid:
    """Nodes 1..N whose query handler answers `answers[node id]` as its partition."""
    app = ClientApp()

    @app.query()
    def query(msg: Message, context: Context) -> Message:
        return Message(RecordDict({"metrics": MetricRecord({PARTITION_METRIC: answers[context.node_id]})}),
                       reply_to=msg)

    return InProcessGrid(app, len(answers))


def test_nodes_are_ordered_by_partition_not_by_id() -> None:
    order = order_nodes(_grid({1: 2, 2: 0, 3: 1}), [3, 1, 2])
    assert order.nodes == [2, 3, 1] and order.by_partition
    assert [order.key(n) for n in order.nodes] == [0, 1, 2] and order.node(2) == 1
    row = order.annotate({"round": 1, "node": 3, "phase": "train"})
    assert list(row) == ["round", "node", "partition", "phase"] and row["partition"] == 1


def test_without_partitions_node_id_order_is_kept() -> None:
    order = order_nodes(_grid({1: -1, 2: -1, 3: -1}), [3, 1, 2])
    assert order.nodes == [1, 2, 3] and not order.by_partition and order.key(3) == 3
    assert "partition" not in order.annotate({"node": 3})


@pytest.mark.parametrize(("answers", "match"), [({1: 0, 2: -1, 3: 1}, "2 of 3 nodes hold a partition"),
                                                ({1: 0, 2: 1, 3: 1}, "both hold partition 1")])
def test_inconsistent_partitions_are_refused(answers: dict[int, int], match: str) -> None:
    with pytest.raises(NodeOrderError, match=match):
        order_nodes(_grid(answers), [1, 2, 3])


def test_the_client_app_answers_with_its_partition() -> None:
    """fedrec's ClientApp replies with node config partition-id (InProcessGrid: node i holds partition i - 1)."""
    order = order_nodes(InProcessGrid(fedrec_client_app, 4), [4, 3, 2, 1])
    assert order.partitions == {1: 0, 2: 1, 3: 2, 4: 3}
    assert partition_of({"data-path": "x.csv"}) == -1 and NodeOrder([5]).key(5) == 5


def test_canary_clients_follow_from_the_partitions_without_a_second_query() -> None:
    """With partitions known, the audit's canary clients are the last partitions (as each node computes it)."""
    assert canary_roles({7: 2, 5: 0, 9: 1}, [5, 9, 7], 1) == {7: 0}
    with pytest.raises(AuditError, match="expected canary clients 0..1"):
        canary_roles({5: 0, 9: 1, 7: 5}, [5, 9, 7], 2)  # partition 5 of 3 nodes: not a canary index
