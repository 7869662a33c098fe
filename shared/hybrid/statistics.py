"""What one device contributes to each release, and the L2 bound the accountant relies on.

A release sums one vector per user. Each vector is computed on the device from that user's own training items and
listen counts plus public data (the catalog, its text table, and what earlier releases made public), then clipped
to the release's sensitivity Δ, so adding or removing one user changes the sum by at most Δ in L2 norm whatever
the history. The server adds N(0, (z Δ)^2) per coordinate (`fedrec.server.release`) and nothing the device sends
outside the sum depends on its data.

Kinds (the `StatisticSpec` a message names):

- `popularity`: the 0/1 indicator of the user's k most-played items over the whole catalog. ||c|| = sqrt(min(k,n))
  <= sqrt(k) = Δ.
- `cooccurrence`: the upper triangle (diagonal included) of x x^T, x the 0/1 indicator of the user's k most-played
  items among a public head of h items. ||c||^2 = k + k(k-1)/2, so Δ = sqrt(k(k+1)/2). (The full symmetric
  matrix would have Frobenius norm k, but every off-diagonal pair is released once.) In a run without any
  privacy layer the device sends x itself (`factored`) and the server forms sum x x^T: the same statistic, h
  numbers per device instead of h(h+1)/2, which is what makes a head of thousands of items possible.
- `cross`: a x^T, a the user's unit text code (r public principal axes of their whitened text profile,
  `fedrec.shared.hybrid.text`) and x the 0/1 indicator of their k most-played items among a public list of h items.
  ||a x^T||_F = ||a|| ||x|| <= sqrt(k) = Δ.

Ties among equally played items are broken by the lower catalog index, so a contribution is a function of the
history alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedrec.shared.hybrid.text import TextFeatures
from fedrec.shared.privacy.mechanisms import clip_update

KINDS = ("popularity", "cooccurrence", "cross")
#: the message-config prefix of a release's public parameters (no dot: never confused with a setting)
CONFIG_PREFIX = "release-"
#: message-config key of a release's central noise multiplier (user-level DP: the server adds the noise)
NOISE_KEY = f"{CONFIG_PREFIX}noise-multiplier"
#: message-config key of the local noise multiplier a device applies under record-level DP alone
RECORD_NOISE_KEY = f"{CONFIG_PREFIX}record-noise-multiplier"
#: the array a release's item list travels in
ITEMS = "items"


def top_k_items(items: np.ndarray, counts: np.ndarray, k: int) -> np.ndarray:
    """The user's k most-played items (ties: the lower catalog index first)."""
    items = np.asarray(items, dtype=np.int64)
    if len(items) <= k:
        return np.sort(items)
    order = np.lexsort((items, -np.asarray(counts, dtype=np.float64)))
    return np.sort(items[order[:k]])


def one_per_slot(items: np.ndarray, counts: np.ndarray, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(items, counts) keeping each slot's most-played item only (ties: the lower catalog index).

    Under record-level DP the unit is one training-example slot (`fedrec.shared.train.examples.bucket_of`): a
    contribution built from one item per slot changes by one item leaving its top-k and at most one entering
    when a whole slot is added or removed, which `StatisticSpec.record_sensitivity` relies on.
    """
    items = np.asarray(items, dtype=np.int64)
    counts = np.asarray(counts, dtype=np.float64)
    order = np.lexsort((items, -counts, np.asarray(slots)))  # by slot, then most played, then lower index
    first = np.ones(len(order), dtype=bool)
    first[1:] = np.asarray(slots)[order][1:] != np.asarray(slots)[order][:-1]
    keep = order[first]
    return items[keep], counts[keep]


@dataclass(frozen=True)
class StatisticSpec:
    """One release's public description: what every device computes (it travels in the release's messages).

    `items`: the public item list the statistic is indexed by (None: the whole catalog, `catalog_size` items).
    """

    kind: str
    k: int
    catalog_size: int
    items: np.ndarray | None = field(default=None, compare=False)
    rank: int = 0  # cross: dimension of the text code
    factored: bool = False  # cooccurrence without any privacy layer: send x, the server forms sum x x^T

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"release kind must be one of {KINDS}, found {self.kind!r}")
        if self.k < 1:
            raise ValueError(f"release {self.kind}: k must be >= 1, found {self.k}")
        if self.kind != "popularity" and (self.items is None or len(self.items) == 0):
            raise ValueError(f"release {self.kind}: needs its public item list")
        if self.kind == "cross" and self.rank < 1:
            raise ValueError(f"release cross: rank must be >= 1, found {self.rank}")

    @property
    def width(self) -> int:
        """Number of items the statistic is over (h, or the catalog size)."""
        return self.catalog_size if self.items is None else len(self.items)

    @property
    def sensitivity(self) -> float:
        """Δ: the L2 bound of one user's contribution."""
        k = min(self.k, self.width)
        if self.kind == "cooccurrence" and not self.factored:
            return math.sqrt(k * (k + 1) / 2)
        return math.sqrt(k)

    @property
    def record_sensitivity(self) -> float:
        """The L2 change adding or removing one example slot can make to a device's contribution built from one
        item per slot (`one_per_slot`), the unit of a device's record-level ledger.

        The top-k indicator x changes by at most one item leaving and one entering (the slot's item, and the
        (k+1)-th most played): ||dx|| <= sqrt(2). Popularity sends x: sqrt(2). Co-occurrence sends the upper
        triangle of x x^T: the entries of the leaving item's row (at most k) and of the entering one's, so
        sqrt(2k). Cross sends code x^T, and the text code moves with every record: only the generic bound, twice
        the clip norm (both contributions lie in the ball of radius `sensitivity`). Never above that bound.
        """
        k = min(self.k, self.width)
        by_kind = {"popularity": math.sqrt(2), "cooccurrence": math.sqrt(2 * k)}
        return min(by_kind.get(self.kind, math.inf), 2 * self.sensitivity)

    @property
    def shape(self) -> tuple[int, ...]:
        """The contribution's shape: (M,), (h(h+1)/2,) or (r, h)."""
        if self.kind == "popularity":
            return (self.catalog_size,)
        if self.kind == "cooccurrence":
            return (self.width,) if self.factored else (self.width * (self.width + 1) // 2,)
        return (self.rank, self.width)

    def template(self) -> dict[str, np.ndarray]:
        """A zero contribution (the layout the sum, the encoding and the noise follow)."""
        return {self.kind: np.zeros(self.shape, dtype=np.float32)}

    # -- the device's contribution ----------------------------------------------------------------------------

    def indicator(self, items: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """x: the 0/1 indicator (over this statistic's items) of the user's k most-played items among them."""
        items = np.asarray(items, dtype=np.int64)
        counts = np.asarray(counts, dtype=np.float64)
        if self.items is None:
            x = np.zeros(self.catalog_size, dtype=np.float64)
            x[top_k_items(items, counts, self.k)] = 1.0
            return x
        pos = np.full(self.catalog_size, -1, dtype=np.int64)
        pos[np.asarray(self.items, dtype=np.int64)] = np.arange(len(self.items))
        mine = pos[items] >= 0
        chosen = top_k_items(items[mine], counts[mine], self.k)
        x = np.zeros(len(self.items), dtype=np.float64)
        x[pos[chosen]] = 1.0
        return x

    def contribution(self, items: np.ndarray, counts: np.ndarray,
                     text: TextFeatures | None = None) -> dict[str, np.ndarray]:
        """One user's clipped contribution (float32). `text` is needed by the cross release only."""
        x = self.indicator(items, counts)
        if self.kind == "popularity":
            c = x
        elif self.kind == "cooccurrence":
            c = x if self.factored else np.outer(x, x)[np.triu_indices(len(x))]
        else:
            if text is None:
                raise ValueError("release cross: the device needs the catalog's text features")
            code = text.code(items, self.rank)
            c = np.outer(code, x)
        clipped, _ = clip_update({self.kind: c.astype(np.float32)}, clip_norm=self.sensitivity)
        return clipped

    # -- on the wire ----------------------------------------------------------------------------------------

    def to_config(self) -> dict[str, Any]:
        return {f"{CONFIG_PREFIX}kind": self.kind, f"{CONFIG_PREFIX}k": self.k,
                f"{CONFIG_PREFIX}catalog-size": self.catalog_size, f"{CONFIG_PREFIX}rank": self.rank,
                f"{CONFIG_PREFIX}factored": self.factored}

    def arrays(self) -> dict[str, np.ndarray]:
        """The public item list, if any (sent as an array: it can be thousands of ids; float32 is exact below
        2^24, which the catalog size is checked against)."""
        if self.catalog_size >= 2**24:
            raise ValueError(f"release {self.kind}: catalogs of 2^24 items or more are not supported")
        return {} if self.items is None else {ITEMS: np.asarray(self.items, dtype=np.float32)}

    @classmethod
    def from_message(cls, config: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> StatisticSpec:
        """The spec a release message describes; ValueError naming the key if it is malformed."""
        try:
            items = arrays.get(ITEMS)
            return cls(kind=str(config[f"{CONFIG_PREFIX}kind"]), k=int(config[f"{CONFIG_PREFIX}k"]),
                       catalog_size=int(config[f"{CONFIG_PREFIX}catalog-size"]),
                       items=None if items is None else np.asarray(items).astype(np.int64),
                       rank=int(config[f"{CONFIG_PREFIX}rank"]),
                       factored=bool(config.get(f"{CONFIG_PREFIX}factored", False)))
        except KeyError as e:
            raise ValueError(f"release message: missing {e}") from None


def is_release(config: Mapping[str, Any]) -> bool:
    """Whether a train message asks for a release contribution (rather than adapter training)."""
    return f"{CONFIG_PREFIX}kind" in config
