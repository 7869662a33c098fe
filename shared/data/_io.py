"""Parsing helpers shared by every on-disk format.

Every format module reads its files through `read_lines` (or `read_csv_rows`), converts fields with the
`parse_*` functions and accumulates rows in a `HistoryBuilder`, so that decoding, error messages and
de-duplication behave the same whatever the format:

- Text is UTF-8 (a BOM is ignored). A line that is not valid UTF-8 is an error naming the line, unless the
  caller names a legacy `fallback` encoding (HetRec's `tags.dat` is Latin-1): then that line alone is decoded
  with it and the summary notes how many lines needed it. Decoding is per line because real dumps mix both.
- Files ending in `.gz` are read through gzip.
- Line numbers are 1-based physical lines. Blank lines carry no data: they are not rows and are not counted.
- An empty file (no non-blank line) is an error.
- A (user, item) pair seen again is folded into its first row: weights add up, the timestamp is the latest,
  and `LoadSummary.duplicates_merged` counts the folded rows.
"""

from __future__ import annotations

import csv
import gzip
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import numpy as np

from fedrec.shared.data.types import Catalog, DataFormatError, Dataset, LoadSummary, UserHistory

_BOM = b"\xef\xbb\xbf"
_SEPARATOR_NAMES = {"\t": "tab", ",": "comma"}


# ---------------------------------------------------------------------------------------------------------
# Reading text
# ---------------------------------------------------------------------------------------------------------

def _open_binary(path: Path) -> BinaryIO:
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def read_lines(
    path: str | Path, *, fallback: str | None = None, summary: LoadSummary | None = None
) -> Iterator[tuple[int, str]]:
    """Yield `(line_number, text)` for every non-blank line, without its line ending.

    `fallback` (e.g. "cp1252") decodes lines that are not valid UTF-8; without it such a line raises
    `DataFormatError`. Lines decoded with the fallback are reported through `summary.note`.
    """
    path = Path(path)
    n_fallback, first_fallback, n_yielded = 0, None, 0
    try:
        with _open_binary(path) as f:
            for line_no, raw in enumerate(f, start=1):
                if line_no == 1 and raw.startswith(_BOM):
                    raw = raw[len(_BOM):]
                raw = raw.rstrip(b"\r\n")
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    if fallback is None:
                        raise DataFormatError(
                            path, f"bytes not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1}); "
                            "save the file as UTF-8", line_no) from None
                    try:
                        text = raw.decode(fallback)
                    except UnicodeDecodeError as e2:
                        raise DataFormatError(
                            path, f"bytes valid neither as UTF-8 nor as {fallback} "
                            f"(byte 0x{raw[e2.start]:02x} at column {e2.start + 1})", line_no) from None
                    n_fallback += 1
                    first_fallback = first_fallback or line_no
                if not text.strip():
                    continue
                n_yielded += 1
                yield line_no, text
    except (OSError, EOFError) as e:  # includes gzip.BadGzipFile and a truncated .gz
        raise DataFormatError(path, f"cannot read: {e}") from None
    if n_yielded == 0:
        raise DataFormatError(path, "empty file (no rows)")
    if n_fallback and summary is not None:
        summary.note(f"{path.name}: {n_fallback} lines are not valid UTF-8 and were decoded as {fallback} "
                     f"(first: line {first_fallback})")


def read_csv_rows(path: str | Path, delimiter: str = ",") -> Iterator[tuple[int, list[str]]]:
    """Yield `(line_number, fields)` for every CSV record (RFC 4180 quoting; a bad quote is an error)."""
    path = Path(path)
    current = 0

    def texts() -> Iterator[str]:
        nonlocal current
        for line_no, text in read_lines(path):
            current = line_no
            yield text

    reader = csv.reader(texts(), strict=True, delimiter=delimiter)
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise DataFormatError(path, f"bad CSV quoting: {e}", current) from None
        yield current, row


# ---------------------------------------------------------------------------------------------------------
# Columns and headers
# ---------------------------------------------------------------------------------------------------------

def split_columns(text: str, sep: str, columns: Sequence[str], path: str | Path, line: int) -> list[str]:
    """Split one line and insist on exactly `len(columns)` fields (the message lists the expected ones)."""
    fields = text.split(sep)
    check_column_count(fields, sep, columns, path, line)
    return fields


def check_column_count(fields: Sequence[str], sep: str, columns: Sequence[str], path: str | Path,
                       line: int) -> None:
    if len(fields) != len(columns):
        sep_name = _SEPARATOR_NAMES.get(sep, repr(sep))
        raise DataFormatError(path, f"expected {len(columns)} {sep_name}-separated columns "
                                    f"({', '.join(columns)}), found {len(fields)}", line)


def is_header(fields: Sequence[str], columns: Sequence[str]) -> bool:
    """True when `fields` spell the column names (case and surrounding spaces ignored)."""
    return [f.strip().lower() for f in fields] == [c.lower() for c in columns]


def check_header(fields: Sequence[str], columns: Sequence[str], path: str | Path, line: int) -> None:
    if not is_header(fields, columns):
        raise DataFormatError(path, f"expected the header row {'/'.join(columns)}, found {'/'.join(fields)!r}",
                              line)


def repeated_header(path: str | Path, line: int) -> DataFormatError:
    """The error for a header row met again below the first line (usually two files concatenated)."""
    return DataFormatError(path, "header row repeated mid-file (were two files concatenated?)", line)


# ---------------------------------------------------------------------------------------------------------
# Fields
# ---------------------------------------------------------------------------------------------------------

def parse_int(text: str, column: str, path: str | Path, line: int) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise DataFormatError(path, f"`{column}` must be an integer, found {text!r}", line) from None


def parse_weight(text: str, column: str, path: str | Path, line: int) -> float:
    """A listen count or weight: a finite number >= 0."""
    try:
        value = float(text.strip())
    except ValueError:
        raise DataFormatError(path, f"`{column}` must be a number, found {text!r}", line) from None
    if not math.isfinite(value):
        raise DataFormatError(path, f"`{column}` must be finite, found {text!r}", line)
    if value < 0:
        raise DataFormatError(path, f"`{column}` must be >= 0, found {text!r}", line)
    return value


_NUMBER = re.compile(r"[+-]?\d+(\.\d*)?")


def parse_timestamp(text: str, column: str, path: str | Path, line: int) -> float:
    """Unix seconds, or ISO 8601 (`2009-05-04T23:08:57Z`); a time without a UTC offset is taken as UTC."""
    text = text.strip()
    if _NUMBER.fullmatch(text):
        return float(text)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise DataFormatError(path, f"`{column}` must be unix seconds or an ISO 8601 time, found {text!r}",
                              line) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def timestamp_value(value: object, column: str, path: str | Path, line: int) -> float:
    """A timestamp that arrived as a JSON value: a number (unix seconds) or a string."""
    if isinstance(value, bool):
        raise DataFormatError(path, f"`{column}` must be unix seconds, found {value!r}", line)
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise DataFormatError(path, f"`{column}` must be finite, found {value!r}", line)
        return float(value)
    if isinstance(value, str):
        return parse_timestamp(value, column, path, line)
    raise DataFormatError(path, f"`{column}` must be unix seconds, found {value!r}", line)


# ---------------------------------------------------------------------------------------------------------
# Accumulating histories
# ---------------------------------------------------------------------------------------------------------

class CatalogBuilder:
    """A catalog discovered while reading interactions: items in order of first appearance."""

    def __init__(self) -> None:
        self.item_ids: list[str] = []
        self.names: list[str] = []
        self.tags: list[list[str]] = []
        self._index: dict[str, int] = {}

    def index(self, item_id: str, name: str) -> int:
        """Internal index of `item_id`, adding it (with display name `name`) on first sight."""
        i = self._index.get(item_id)
        if i is None:
            i = self._index[item_id] = len(self.item_ids)
            self.item_ids.append(item_id)
            self.names.append(name)
            self.tags.append([])
        return i

    def build(self) -> Catalog:
        return Catalog(list(self.item_ids), list(self.names), [list(t) for t in self.tags])


class HistoryBuilder:
    """Per-user (item -> weight, latest timestamp, row count), users and items kept in first-seen order."""

    def __init__(self, summary: LoadSummary) -> None:
        self.summary = summary
        self._users: dict[str, dict[int, list[float]]] = {}  # user -> item -> [weight, timestamp, rows]
        self.has_timestamps = False

    def add(self, user: str, item: int, weight: float = 1.0, timestamp: float | None = None) -> None:
        """Record one used row; a repeat of a pair adds its weight and keeps the latest timestamp."""
        self.summary.rows_used += 1
        ts = math.nan if timestamp is None else timestamp
        self.has_timestamps = self.has_timestamps or timestamp is not None
        items = self._users.setdefault(user, {})
        cell = items.get(item)
        if cell is None:
            items[item] = [weight, ts, 1]
            return
        self.summary.duplicates_merged += 1
        cell[0] += weight
        if math.isnan(cell[1]) or ts > cell[1]:
            cell[1] = ts
        cell[2] += 1

    @property
    def user_ids(self) -> list[str]:
        return list(self._users)

    def row_counts(self, user: str) -> dict[int, int]:
        """Source rows behind each of `user`'s items (what a skip of that item would drop)."""
        return {item: int(cell[2]) for item, cell in self._users[user].items()}

    def history(self, user: str) -> UserHistory:
        cells = self._users[user]
        items = np.fromiter(cells.keys(), dtype=np.int64, count=len(cells))
        weights = np.fromiter((c[0] for c in cells.values()), dtype=np.float64, count=len(cells))
        timestamps = None
        if self.has_timestamps:
            timestamps = np.fromiter((c[1] for c in cells.values()), dtype=np.float64, count=len(cells))
        return UserHistory(user, items, weights, timestamps)

    def histories(self) -> list[UserHistory]:
        return [self.history(u) for u in self._users]


@dataclass
class Parsed:
    """What a format parser produced, before it becomes a `Dataset` (keeps the per-row counts)."""

    catalog: Catalog
    histories: HistoryBuilder
    summary: LoadSummary

    def dataset(self) -> Dataset:
        return Dataset(self.catalog, self.histories.histories(), self.summary)
