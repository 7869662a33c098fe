"""How a run's settings and an adapter state map onto the protocol, identically on the server and the clients.

* The encoding of a round: S = user-clip-norm (the same L2 bound DP-FedAvg accounts for; with secure
  aggregation a client clips to it even without user-dp, because masking needs bounded inputs), the number of
  clients asked this round as `max_clients`, and the ring size `secagg-ring-bits`.
* The vector of a state: every tensor flattened in *sorted key order*, so the client's encoding and the
  server's decoding agree whatever order the dictionaries were built in.
"""

from __future__ import annotations

import numpy as np

from fedrec.shared.config import RunConfig
from fedrec.shared.secagg.encoding import FixedPointEncoding

State = dict[str, np.ndarray]


def round_encoding(cfg: RunConfig, max_clients: int) -> FixedPointEncoding:
    return FixedPointEncoding(clip_norm=cfg.user_dp.clip_norm, max_clients=max_clients, ring_bits=cfg.secagg.ring_bits)


def flatten_state(state: State) -> np.ndarray:
    """(d,) float64: the tensors of `state` in sorted key order."""
    return np.concatenate([np.asarray(state[k], dtype=np.float64).ravel() for k in sorted(state)])


def unflatten_state(vector: np.ndarray, template: State, dtype: type = np.float32) -> State:
    """The inverse of `flatten_state` for tensors shaped like `template` (as `dtype`)."""
    sizes = [template[k].size for k in sorted(template)]
    if int(sum(sizes)) != vector.size:
        raise ValueError(f"vector has {vector.size} values, the template {sum(sizes)}")
    out: State = {}
    offset = 0
    for k, n in zip(sorted(template), sizes, strict=True):
        out[k] = vector[offset:offset + n].reshape(template[k].shape).astype(dtype)
        offset += n
    return {k: out[k] for k in template}
