"""In-memory form of every data set fedrec reads, whatever its on-disk format.

The item catalog (ids, names, tags) is public: the server, every client and the recommender may read it.
A user's history is private: only that user's client ever reads it. Artist tags aggregated over all users
(as in HetRec's `user_taggedartists.dat`) are treated as public catalog metadata.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class DataFormatError(ValueError):
    """Bad input in a data file. The message always names the file and, where there is one, the line."""

    def __init__(self, path: str, message: str, line: int | None = None) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")
        self.path = str(path)
        self.line = line


@dataclass(frozen=True)
class Catalog:
    """The public item catalog. Internal item index `i` is position `i` in these lists."""

    item_ids: list[str]  # external ids as written in the source files
    names: list[str]  # display names (artist names)
    tags: list[list[str]]  # top tags per item, most important first (may be empty)

    def __post_init__(self) -> None:
        if not (len(self.item_ids) == len(self.names) == len(self.tags)):
            raise ValueError(
                f"Catalog lists differ in length: ids {len(self.item_ids)}, names {len(self.names)}, "
                f"tags {len(self.tags)}"
            )

    def __len__(self) -> int:
        return len(self.item_ids)

    def text(self, i: int, max_tags: int = 5) -> str:
        """Item-side text: `name | tag1, tag2, ...` (what the item tower encodes)."""
        tags = self.tags[i][:max_tags]
        return f"{self.names[i]} | {', '.join(tags)}" if tags else self.names[i]


@dataclass(frozen=True)
class UserHistory:
    """One user's private listening history, de-duplicated: each item at most once."""

    user_id: str
    items: np.ndarray  # (n,) int64 internal item indices, unique
    weights: np.ndarray  # (n,) float64 listen counts (1.0 where the format has none)
    timestamps: np.ndarray | None = None  # (n,) float64 unix seconds of the latest listen, or None

    def __len__(self) -> int:
        return int(self.items.shape[0])


@dataclass
class LoadSummary:
    """What a loader read, and every row it did not use with the reason. Nothing is dropped silently."""

    source: str
    rows_read: int = 0
    rows_used: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count
    duplicates_merged: int = 0  # (user, item) rows folded into an earlier row of the same pair
    notes: list[str] = field(default_factory=list)  # anything else worth reporting (encoding fallbacks, ...)

    def skip(self, reason: str, n: int = 1) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + n

    def note(self, text: str) -> None:
        self.notes.append(text)

    def lines(self) -> list[str]:
        out = [f"{self.source}: read {self.rows_read} rows, used {self.rows_used}"]
        if self.duplicates_merged:
            out.append(f"  merged {self.duplicates_merged} duplicate (user, item) rows")
        for reason, n in sorted(self.skipped.items()):
            out.append(f"  skipped {n} rows: {reason}")
        out.extend(f"  note: {text}" for text in self.notes)
        return out


@dataclass(frozen=True)
class Dataset:
    """A catalog plus the private histories of every user (a simulation holds them all)."""

    catalog: Catalog
    users: list[UserHistory]  # sorted by user_id as the source orders them (file order)
    summary: LoadSummary
