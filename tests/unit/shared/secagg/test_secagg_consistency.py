"""A client's refusals: the consistency rule (never both kinds of share for one peer) and the other checks that
keep a deviating server from unmasking a live client."""

from __future__ import annotations

import random

import numpy as np
import pytest
from flwr.app import ConfigRecord

from fedrec.shared.secagg.client import SecAggClient
from fedrec.shared.secagg.errors import SecAggProtocolError
from fedrec.shared.secagg.protocol import SESSION_BYTES, ShareKeysRequest, UnmaskRequest
from fedrec.shared.secagg.server import SecAggServer

SESSION = bytes(range(SESSION_BYTES))


def masked_clients(n: int = 5) -> tuple[dict[int, SecAggClient], SecAggServer]:
    """n clients (ids 0..n-1, complete graph, t = n//2 + 1) that have sent their masked inputs."""
    clients, keys = {}, {}
    for c in range(n):
        clients[c], keys[c] = SecAggClient.start(session=SESSION, encoded=np.zeros(4, dtype=np.uint32), ring_bits=32)
    server = SecAggServer(session=SESSION, ring_bits=32, dim=4, advertised=keys, rng=random.Random(0))
    server.receive_share_keys({c: clients[c].share_keys(r) for c, r in server.share_keys_requests().items()})
    server.receive_masked_inputs({c: clients[c].masked_input(r) for c, r in server.masked_input_requests().items()})
    return clients, server


def test_refuses_both_shares_of_one_peer_in_one_request() -> None:
    """A peer listed as alive and dropped at once: refused, nothing answered."""
    clients, _ = masked_clients()
    me = clients[0]
    with pytest.raises(SecAggProtocolError, match=r"both alive and dropped"):
        me.unmask(UnmaskRequest(session=SESSION, alive=(1, 2, 3, 4), dropped=(2,)))
    assert me.answered == {}


def test_refuses_the_other_share_of_a_peer_in_a_later_request() -> None:
    """A server that got peer 2's self-mask share and then claims 2 dropped (to get its mask key as well) is
    refused, also when the client's state went through a ConfigRecord in between (as in context.state)."""
    clients, _ = masked_clients()
    first = clients[0].unmask(UnmaskRequest(session=SESSION, alive=(1, 2, 3, 4), dropped=()))
    assert 3 in first.self_mask_shares and not first.key_shares
    me = SecAggClient.from_state(ConfigRecord(clients[0].to_state()))
    with pytest.raises(SecAggProtocolError, match=r"consistency rule: already gave the other kind of share of \[3\]"):
        me.unmask(UnmaskRequest(session=SESSION, alive=(1, 2, 4, 5), dropped=(3,)))
    again = me.unmask(UnmaskRequest(session=SESSION, alive=(1, 2, 3, 4), dropped=()))  # the same question is fine
    assert again.self_mask_shares == first.self_mask_shares


def test_refuses_to_reveal_its_own_mask_key() -> None:
    """Asked for a share of its own mask key (i.e. told it dropped) while it is answering: refused."""
    clients, server = masked_clients()
    me = server.index[0]
    with pytest.raises(SecAggProtocolError, match=r"own mask key"):
        clients[0].unmask(UnmaskRequest(session=SESSION, alive=tuple(i for i in range(1, 6) if i != me),
                                        dropped=(me,)))


def test_refuses_when_fewer_than_t_are_listed_alive() -> None:
    """A server claiming most neighbours dropped (to collect their mask keys) is refused outright."""
    clients, server = masked_clients()
    with pytest.raises(SecAggProtocolError, match=r"only 2 alive holders listed, fewer than t = 3"):
        clients[0].unmask(UnmaskRequest(session=SESSION, alive=(1, 2), dropped=(3, 4, 5)))


def test_refuses_a_threshold_below_a_strict_majority() -> None:
    """With t <= m/2 a server could collect t shares of each kind from disjoint holders: refused at stage 1."""
    client, _ = SecAggClient.start(session=SESSION, encoded=np.zeros(2, dtype=np.uint32), ring_bits=32)
    others = [SecAggClient.start(session=SESSION, encoded=np.zeros(2, dtype=np.uint32), ring_bits=32)[1]
              for _ in range(3)]
    with pytest.raises(SecAggProtocolError, match=r"strict majority"):
        client.share_keys(ShareKeysRequest(session=SESSION, index=1, threshold=2,
                                           neighbours={2: others[0], 3: others[1], 4: others[2]}))


def test_refuses_requests_of_another_round_or_out_of_order() -> None:
    """A request with another session id, or a stage asked twice, is refused."""
    clients, _ = masked_clients()
    with pytest.raises(SecAggProtocolError, match=r"another round"):
        clients[1].unmask(UnmaskRequest(session=bytes(SESSION_BYTES), alive=(1, 2, 3), dropped=()))
    with pytest.raises(SecAggProtocolError, match=r"out of order"):
        clients[1].share_keys(ShareKeysRequest(session=SESSION, index=1, threshold=3, neighbours={}))


def test_secrets_are_wiped_once_the_masked_input_is_sent() -> None:
    """After stage 2 a client keeps no input, seed or private key (only the shares it holds for others)."""
    clients, _ = masked_clients()
    state = clients[0].to_state()
    assert state["encoded"] == b"" and state["seed"] == b"" and state["s-sk"] == b"" and state["c-sk"] == b""
    assert len(state["held-index"]) == 5
