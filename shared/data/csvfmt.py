"""Generic CSV (or TSV): an interactions file plus, optionally, an item-metadata file. Both need a header row.

Interactions: columns `user`, `item`, and optionally `timestamp` (unix seconds or ISO 8601) and `weight`
(a number >= 0; 1 per row without the column), in any order. Metadata: `item`, `name` and optionally `tags`
(separated by `;` or `|`, most important first). Column names are matched case-insensitively, and the usual
names of other data sets are read as these (`ALIASES`: `rating`, `plays`, `count` -> `weight`; `user_id`,
`userId` -> `user`; `movieId`, `isbn`, `asin` -> `item`; `title` -> `name`; `genres` -> `tags`; ...); the load
summary notes each alias used. Any other column is an error naming it and listing the accepted names: a column
we would silently ignore is usually one the author meant us to use.

The separator is read from the header line: a comma, a tab, `;` or `|`, whichever splits it into known column
names. A field holding the separator is quoted (RFC 4180: `"Earth, Wind & Fire"`, a quote inside doubled).
Text is UTF-8 (a BOM is ignored); a line that is not is an error naming the line. A first line of data instead
of a header is an error that says a header row is needed.

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
    read_lines,
    repeated_header,
)
from fedrec.shared.data.types import Catalog, DataFormatError, Dataset, LoadSummary

INTERACTION_COLUMNS = (("user", "item"), ("timestamp", "weight"))  # (required, optional)
METADATA_COLUMNS = (("item", "name"), ("tags",))
_TAG_SEPARATORS = re.compile(r"[;|]")
SEPARATORS = (",", "\t", ";", "|")
_SEPARATOR_NAMES = {",": "comma", "\t": "tab", ";": "semicolon", "|": "pipe"}

#: other data sets' column names -> ours (compared case-insensitively, `-`/` ` read as `_`)
ALIASES: dict[str, str] = {
    **dict.fromkeys(("user_id", "userid", "uid", "customer", "customer_id", "listener", "reader", "viewer",
                     "reviewer_id", "user_name"), "user"),
    **dict.fromkeys(("item_id", "itemid", "iid", "artist", "artist_id", "artistid", "track", "track_id", "movie",
                     "movie_id", "movieid", "book", "book_id", "isbn", "product", "product_id", "asin"), "item"),
    **dict.fromkeys(("rating", "score", "plays", "playcount", "play_count", "count", "listens", "listen_count",
                     "quantity", "value"), "weight"),
    **dict.fromkeys(("time", "ts", "date", "datetime", "unix_timestamp", "listened_at"), "timestamp"),
    **dict.fromkeys(("title", "artist_name", "item_name", "movie_title", "book_title", "product_name"), "name"),
    **dict.fromkeys(("tag", "genres", "genre", "categories", "category", "keywords"), "tags"),
}


def _canonical(raw: str) -> str:
    """A header cell as the column it names: case-folded, `-`/` ` as `_`, aliases resolved."""
    name = raw.strip().lower().replace("-", "_").replace(" ", "_")
    return ALIASES.get(name, name)


def _known(columns: tuple[tuple[str, ...], tuple[str, ...]]) -> set[str]:
    return set(columns[0]) | set(columns[1])


def is_generic_header(fields: Sequence[str]) -> bool:
    """True when `fields` name the interaction columns (with aliases): a header `detect_format` can trust."""
    names = [_canonical(f) for f in fields]
    return {"user", "item"} <= set(names) and set(names) <= _known(INTERACTION_COLUMNS)


def _separator(path: Path, columns: tuple[tuple[str, ...], tuple[str, ...]]) -> str:
    """The separator that splits the header line into known column names (a comma when none does)."""
    line_no, header = next(read_lines(path))
    known = _known(columns)
    for sep in SEPARATORS:
        cells = header.split(sep)
        if len(cells) > 1 and all(_canonical(c.strip('"')) in known for c in cells):
            return sep
    if not any(_canonical(c.strip('"')) in known for sep in SEPARATORS for c in header.split(sep)):
        raise DataFormatError(path, f"the first line is not a header row: a fedrec CSV starts with one naming its "
                                    f"columns ({_allowed(columns)}), e.g. `{','.join(columns[0])}`; found "
                                    f"{header[:80]!r}", line_no)
    return ","


def _allowed(columns: tuple[tuple[str, ...], tuple[str, ...]]) -> str:
    required, optional = columns
    return f"{', '.join(required)}, optionally {', '.join(optional)}"


def _aliases_of(columns: tuple[tuple[str, ...], tuple[str, ...]]) -> str:
    known = _known(columns)
    return "; ".join(f"{c}: {', '.join(a for a, to in ALIASES.items() if to == c)}" for c in sorted(known)
                     if any(to == c for to in ALIASES.values()))


def _read_header(path: Path, line: int, fields: Sequence[str], columns: tuple[tuple[str, ...], tuple[str, ...]],
                 summary: LoadSummary | None) -> dict[str, int]:
    """Column name -> position, after checking for unknown, repeated and missing columns."""
    required, optional = columns
    position: dict[str, int] = {}
    for k, raw in enumerate(fields):
        name = _canonical(raw)
        if name in position:
            raise DataFormatError(path, f"column `{name}` appears twice in the header", line)
        if name not in required and name not in optional:
            raise DataFormatError(path, f"unknown column `{raw.strip()}` (expected {_allowed(columns)}; also "
                                        f"accepted: {_aliases_of(columns)})", line)
        if summary is not None and raw.strip().lower() != name:
            summary.note(f"{path.name}: column `{raw.strip()}` read as `{name}`")
        position[name] = k
    missing = [c for c in required if c not in position]
    if missing:
        raise DataFormatError(path, f"missing column(s) {', '.join(f'`{c}`' for c in missing)} "
                                    f"(expected {_allowed(columns)})", line)
    return position


def _records(path: Path, columns: tuple[tuple[str, ...], tuple[str, ...]], summary: LoadSummary | None = None
             ) -> Iterator[tuple[int, dict[str, str]]]:
    """`(line, {column: value})` for each data row: column count checked, repeated header an error."""
    sep = _separator(path, columns)
    rows = read_csv_rows(path, delimiter=sep)
    line_no, header = next(rows)
    position = _read_header(path, line_no, header, columns, summary)
    header_lower = [h.strip().lower() for h in header]
    n_rows = 0
    for line_no, fields in rows:
        if len(fields) != len(header):
            hint = (f"; quote a field that contains a {_SEPARATOR_NAMES[sep]} (\"Earth{sep} Wind & Fire\")"
                    if len(fields) > len(header) else "")
            raise DataFormatError(path, f"expected {len(header)} {_SEPARATOR_NAMES[sep]}-separated columns "
                                        f"({', '.join(header_lower)}), found {len(fields)}{hint}", line_no)
        if [f.strip().lower() for f in fields] == header_lower:
            raise repeated_header(path, line_no)
        n_rows += 1
        yield line_no, {name: fields[k].strip() for name, k in position.items()}
    if n_rows == 0:
        raise DataFormatError(path, "no rows below the header")


def _read_metadata(path: Path, summary: LoadSummary | None = None) -> tuple[Catalog, dict[str, int]]:
    ids: list[str] = []
    names: list[str] = []
    tags: list[list[str]] = []
    index: dict[str, int] = {}
    first_line: dict[str, int] = {}
    for line_no, rec in _records(path, METADATA_COLUMNS, summary):
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
        catalog, known = _read_metadata(metadata, summary)
    for line_no, rec in _records(path, INTERACTION_COLUMNS, summary):
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
