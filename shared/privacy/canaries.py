"""Audit canaries: what the server inserts into a run to measure its privacy empirically, and how devices use them.

Two kinds, both drawn by the server (`fedrec.server.empirical_audit`) from a seed it keeps secret until training
is over:

* **Record canaries** (record-level, Steinke et al. 2023). A canary is one training example made only of public
  catalog items: a history prompt of `CANARY_HISTORY_ITEMS` random artists and a random target artist, unique
  per canary and never in any canary's history. Each canary has a host device (a real user's device, at most one
  canary per device) and is included with probability 1/2. The host of an *included* canary receives it in its
  train message (`AUDIT_KEY`) and trains on it as one more example; the host of an excluded canary receives
  nothing. When record canaries are on, every device, host or not, runs DP-SGD over K + 1 slots (the K history
  slots plus one audit slot, empty unless it holds an included canary), so the sampling rate, the step count and
  the device's epsilon do not depend on who hosts what (`record_slots`).
* **Canary clients** (user-level, Andrew et al. 2024). K extra virtual clients, no user behind them: in a
  simulation the partitions after the real users' (`canary_client_index`). Each is sampled like any other
  client. An included canary client receives a secret seed and replies with the unit direction that seed
  draws (over every adapter tensor) times the clip norm S; an excluded one replies with a zero update (so in
  and out differ only by the canary's update: zero-out adjacency, which the add/remove accounting covers).

Neither kind touches a real user's data: a record canary is an extra example next to the user's own (the user's
examples, evaluation prompt and held-out items are unchanged), and canary clients have no data at all and are
never evaluated.

Wire contract (keys are only added, never renamed): a train message's config may hold `AUDIT_KEY`, a JSON
string `{"record_canaries": [{"target": int, "history": [int, ...]}, ...]}` (host devices) or
`{"direction_seed": int}` (included canary clients). A query message (`QUERY_CANARY_CLIENTS` in its config)
asks a node whether it is a canary client; it replies `ROLE_METRIC` = its canary index, or -1 for a user.
A canary client's train reply carries `CANARY_METRIC` = 1 and no data-dependent metric.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedrec.shared.config import RunConfig
from fedrec.shared.data.types import Catalog
from fedrec.shared.protocol import AUDIT_KEY, CANARY_METRIC, QUERY_CANARY_CLIENTS, ROLE_METRIC  # noqa: F401 - re-exported
from fedrec.shared.train.examples import prompt_prefix, prompt_text

#: Artists in a record canary's history prompt.
CANARY_HISTORY_ITEMS = 5


@dataclass(frozen=True)
class RecordCanary:
    """One record canary: history prompt items -> target item (catalog indices, public items only)."""

    target: int
    history: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {"target": int(self.target), "history": [int(i) for i in self.history]}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> RecordCanary:
        return cls(int(d["target"]), tuple(int(i) for i in d["history"]))


@dataclass(frozen=True)
class AuditInstructions:
    """What one train message asks of one node (nothing, for most nodes)."""

    record_canaries: tuple[RecordCanary, ...] = field(default=())
    direction_seed: int | None = None

    def to_config(self) -> dict[str, str]:
        doc: dict[str, Any] = {}
        if self.record_canaries:
            doc["record_canaries"] = [c.to_json() for c in self.record_canaries]
        if self.direction_seed is not None:
            doc["direction_seed"] = int(self.direction_seed)
        return {AUDIT_KEY: json.dumps(doc, separators=(",", ":"))} if doc else {}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> AuditInstructions:
        raw = config.get(AUDIT_KEY)
        if raw is None or raw == "":
            return cls()
        try:
            doc = json.loads(str(raw))
            canaries = tuple(RecordCanary.from_json(c) for c in doc.get("record_canaries", []))
            seed = doc.get("direction_seed")
            return cls(canaries, None if seed is None else int(seed))
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"message config {AUDIT_KEY!r}: not valid audit instructions ({e}): "
                             f"{str(raw)[:200]!r}") from None


def record_slots(cfg: RunConfig) -> int:
    """DP-SGD slots of every device: the K history slots, plus one audit slot when record canaries are on."""
    return cfg.train.examples_per_user + (1 if cfg.audit.canaries > 0 else 0)


def canary_client_index(partition_id: int, num_partitions: int, canary_clients: int) -> int | None:
    """The canary-client index of a simulated node (partitions after the real users'), or None for a user."""
    first = num_partitions - canary_clients
    if canary_clients < 0 or first < 0:
        raise ValueError(f"{canary_clients} canary clients among {num_partitions} partitions")
    return partition_id - first if partition_id >= first else None


def draw_record_canaries(catalog_size: int, count: int, rng: np.random.Generator) -> list[RecordCanary]:
    """`count` canaries with distinct targets; history items are distinct and never any canary's target."""
    if count > catalog_size // 2:
        raise ValueError(f"{count} record canaries need distinct targets and histories from a catalog of "
                         f"{catalog_size} items; use at most {catalog_size // 2}")
    targets = rng.choice(catalog_size, size=count, replace=False)
    pool = np.setdiff1d(np.arange(catalog_size), targets)
    k = min(CANARY_HISTORY_ITEMS, pool.size)
    return [RecordCanary(int(t), tuple(int(i) for i in rng.choice(pool, size=k, replace=False))) for t in targets]


def canary_examples(canaries: Sequence[RecordCanary], catalog: Catalog, cfg: RunConfig
                    ) -> tuple[list[str], list[int], list[np.ndarray]]:
    """(prompts, targets, histories) of the canaries, built like `fedrec.shared.train.examples.draw_examples`'s."""
    histories = [np.asarray(c.history, dtype=np.int64) for c in canaries]
    prompts = [prompt_text(catalog, h, cfg.model.prompt_tags, prompt_prefix(cfg)) for h in histories]
    return prompts, [int(c.target) for c in canaries], histories


def canary_direction(template: Mapping[str, np.ndarray], seed: int) -> dict[str, np.ndarray]:
    """A uniformly random unit vector over every tensor of `template` (float64), drawn from `seed`.

    Tensors are filled in sorted-name order from one PCG64 stream, so the server and the canary client draw the
    same direction from the same seed and adapter layout.
    """
    rng = np.random.default_rng(seed)
    parts = {k: rng.standard_normal(np.shape(template[k])) for k in sorted(template)}
    norm = math.sqrt(sum(float(np.sum(v * v)) for v in parts.values()))
    return {k: v / norm for k, v in parts.items()}


def canary_client_update(template: Mapping[str, np.ndarray], *, seed: int | None, norm: float
                         ) -> dict[str, np.ndarray]:
    """A canary client's "delta": its direction times `norm` (the clip norm S), or zeros when excluded."""
    if seed is None:
        return {k: np.zeros(np.shape(v), dtype=np.float32) for k, v in template.items()}
    direction = canary_direction(template, seed)
    return {k: (direction[k] * norm).astype(np.float32) for k in template}


def inner_product(direction: Mapping[str, np.ndarray], change: Mapping[str, np.ndarray]) -> float:
    """<direction, change> over every tensor, in float64."""
    return sum(float(np.sum(direction[k] * np.asarray(change[k], dtype=np.float64))) for k in direction)


def cosine_with(direction: Mapping[str, np.ndarray], change: Mapping[str, np.ndarray]) -> float:
    """cos(direction, change) for a unit `direction` and a model change (the sum of the released updates), float64."""
    norm = math.sqrt(sum(float(np.sum(np.asarray(v, dtype=np.float64) ** 2)) for v in change.values()))
    return inner_product(direction, change) / norm if norm > 0 else 0.0
