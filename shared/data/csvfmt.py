"""Generic CSV: an interactions file plus, optionally, an item-metadata file. Both need a header row.

Interactions: columns `user`, `item`, and optionally `timestamp` (unix seconds or ISO 8601) and `weight`
(a number >= 0; 1 per row without the column), in any order. Metadata: `item`, `name` and optionally `tags`
(separated by `;` or `|`, most important first). Column names are matched case-insensitively. Any other
column is an error naming it: a column we would silently ignore (`plays`, `count`) is usually one the author
meant us to use.

With metadata the catalog is the metadata file, in its order, and an interaction with an item id it lacks is an
error naming the line. Without metadata the catalog is the items in order of first appearance, named by their
ids, with no tags. Users and each user's items in order of first appearance; repeats of a (user, item) pair are
merged (weights add up, the latest timestamp is kept).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path

from fedrec.shared.data._io import (
    CatalogBuilder,
    HistoryBuilder,
    Parsed,
    parse_timestamp,
    parse_weight,
    read_csv_rows,
    repeated_header,
)
from fedrec.shared.data.types import Catalog, DataFormatError, Dataset, LoadSummary

INTERACTION_COLUMNS = (("user", "item"), ("timestamp", "weight"))  # (required, optional)
METADATA_COLUMNS = (("item", "name"), ("tags",))
_TAG_SEPARATORS = re.compile(r"[;|]")


def _read_header(path: Path, line: int, fields: Sequence[str], columns: tuple[tuple[str, ...], tuple[str, ...]]
                 ) -> dict[str, int]:
    """Column name -> position, after checking for unknown, repeated and missing columns."""
    required, optional = columns
    allowed = f"{', '.join(required)}, optionally {', '.join(optional)}"
    position: dict[str, int] = {}
    for k, raw in enumerate(fields):
        name = raw.strip().lower()
        if name in position:
            raise DataFormatError(path, f"column `{name}` appears twice in the header", line)
        if name not in required and name not in optional:
            raise DataFormatError(path, f"unknown column `{raw.strip()}` (expected {allowed})", line)
        position[name] = k
    missing = [c for c in required if c not in position]
    if missing:
        raise DataFormatError(path, f"missing column(s) {', '.join(f'`{c}`' for c in missing)} "
                                    f"(expected {allowed})", line)
    return position


def _records(path: Path, columns: tuple[tuple[str, ...], tuple[str, ...]]) -> Iterator[tuple[int, dict[str, str]]]:
    """`(line, {column: value})` for each data row: column count checked, repeated header an error."""
    rows = read_csv_rows(path)
    line_no, header = next(rows)
    position = _read_header(path, line_no, header, columns)
    header_lower = [h.strip().lower() for h in header]
    n_rows = 0
    for line_no, fields in rows:
        if len(fields) != len(header):
            raise DataFormatError(path, f"expected {len(header)} comma-separated columns "
                                        f"({', '.join(header_lower)}), found {len(fields)}", line_no)
        if [f.strip().lower() for f in fields] == header_lower:
            raise repeated_header(path, line_no)
        n_rows += 1
        yield line_no, {name: fields[k].strip() for name, k in position.items()}
    if n_rows == 0:
        raise DataFormatError(path, "no rows below the header")


def _read_metadata(path: Path) -> tuple[Catalog, dict[str, int]]:
    ids: list[str] = []
    names: list[str] = []
    tags: list[list[str]] = []
    index: dict[str, int] = {}
    first_line: dict[str, int] = {}
    for line_no, rec in _records(path, METADATA_COLUMNS):
        item, name = rec["item"], rec["name"]
        if not item:
            raise DataFormatError(path, "empty `item`", line_no)
        if item in index:
            raise DataFormatError(path, f"item {item!r} already defined on line {first_line[item]}", line_no)
        if not name:
            raise DataFormatError(path, f"item {item!r} has an empty `name`", line_no)
        index[item], first_line[item] = len(ids), line_no
        ids.append(item)
        names.append(name)
        tags.append([t.strip() for t in _TAG_SEPARATORS.split(rec.get("tags", "")) if t.strip()])
    return Catalog(ids, names, tags), index


def parse_csv(path: str | Path, metadata: str | Path | None = None) -> Parsed:
    """Read an interactions CSV (and its item metadata, if given); see the module docstring for every rule."""
    path = Path(path)
    summary = LoadSummary(source=str(path))
    histories = HistoryBuilder(summary)
    known: dict[str, int] | None = None
    discovered = CatalogBuilder()
    if metadata is not None:
        metadata = Path(metadata)
        catalog, known = _read_metadata(metadata)
    for line_no, rec in _records(path, INTERACTION_COLUMNS):
        summary.rows_read += 1
        user, item = rec["user"], rec["item"]
        if not user:
            raise DataFormatError(path, "empty `user`", line_no)
        if not item:
            raise DataFormatError(path, "empty `item`", line_no)
        if known is None:
            i = discovered.index(item, item)
        elif (i := known.get(item)) is None:
            raise DataFormatError(path, f"item {item!r} is not in the metadata file {metadata}", line_no)
        weight = parse_weight(rec["weight"], "weight", path, line_no) if "weight" in rec else 1.0
        timestamp = parse_timestamp(rec["timestamp"], "timestamp", path, line_no) if "timestamp" in rec else None
        histories.add(user, i, weight, timestamp)
    if known is None:
        catalog = discovered.build()
    return Parsed(catalog, histories, summary)


def load_csv(path: str | Path, metadata: str | Path | None = None) -> Dataset:
    """An interactions CSV (plus optional item-metadata CSV) as a `Dataset`."""
    return parse_csv(path, metadata).dataset()
