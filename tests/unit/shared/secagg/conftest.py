"""An in-process driver of one SecAgg+ round (no Flower): clients, a server, dropouts, and the server's view."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from flwr.app import ConfigRecord

from fedrec.shared.secagg.client import SecAggClient
from fedrec.shared.secagg.errors import SecAggProtocolError
from fedrec.shared.secagg.protocol import SESSION_BYTES
from fedrec.shared.secagg.server import SecAggServer


@dataclass
class RoundResult:
    """What a round produced: the ring sum (None if aborted), who is in it, and everything the server received."""

    total: np.ndarray | None
    survivors: list[int]
    server: SecAggServer | None
    view: dict[str, dict[int, Any]] = field(default_factory=dict)  # stage -> client -> reply object
    refusals: dict[int, str] = field(default_factory=dict)


def run_round(inputs: Mapping[int, np.ndarray], *, ring_bits: int = 32, drop: Mapping[str, set[int]] | None = None,
              degree: int = 0, threshold_fraction: float = 0.5, seed: int = 0,
              roundtrip_state: bool = False) -> RoundResult:
    """One round over `inputs` (client id -> encoded ring vector). `drop[stage]` is the set of clients that
    never answer that stage ("advertise-keys", "share-keys", "masked-input", "unmask"). Raises SecAggAborted."""
    drop = {k: set(v) for k, v in (drop or {}).items()}
    session = random.Random(seed).randbytes(SESSION_BYTES)
    clients: dict[int, SecAggClient] = {}
    view: dict[str, dict[int, Any]] = {}
    refusals: dict[int, str] = {}

    def ask(stage: str, requests: Mapping[int, Any], call: Callable[[SecAggClient, Any], Any]) -> dict[int, Any]:
        out = {}
        for c, req in requests.items():
            if c in drop.get(stage, set()):
                continue
            # roundtrip_state: as between two Flower messages, the client lives in a ConfigRecord in between
            client = (SecAggClient.from_state(ConfigRecord(clients[c].to_state())) if roundtrip_state
                      else clients[c])
            try:
                out[c] = call(client, req)
            except SecAggProtocolError as e:
                refusals[c] = f"{stage}: {e}"
                continue
            clients[c] = client
        view[stage] = out
        return out

    advertised = {}
    for c, x in inputs.items():
        clients[c], keys = SecAggClient.start(session=session, encoded=x, ring_bits=ring_bits)
        if c not in drop.get("advertise-keys", set()):
            advertised[c] = keys
    view["advertise-keys"] = dict(advertised)
    dim = len(next(iter(inputs.values())))
    server = SecAggServer(session=session, ring_bits=ring_bits, dim=dim, advertised=advertised, degree=degree,
                          threshold_fraction=threshold_fraction, rng=random.Random(seed))
    server.receive_share_keys(ask("share-keys", server.share_keys_requests(), SecAggClient.share_keys))
    server.receive_masked_inputs(ask("masked-input", server.masked_input_requests(), SecAggClient.masked_input))
    total = server.receive_unmask(ask("unmask", server.unmask_requests(), SecAggClient.unmask))
    return RoundResult(total=total, survivors=server.survivors, server=server, view=view, refusals=refusals)


@pytest.fixture(scope="session")
def secagg_round() -> Callable[..., RoundResult]:
    return run_round
