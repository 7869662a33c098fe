"""An adapter state as one vector and back: what a client encodes and masks, and what the server decodes.

Every tensor is flattened in *sorted key order*, so the client's vector and the server's reading of the sum agree
whatever order the dictionaries were built in.
"""

from __future__ import annotations

import numpy as np

State = dict[str, np.ndarray]


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
