"""ListenBrainz listens: JSON Lines (one listen object per line) or one JSON array of listen objects.

A listen is `{"listened_at": <unix seconds>, "track_metadata": {"artist_name": ..., "track_name": ...,
"additional_info": {"artist_mbids": [...]}, "mbid_mapping": {"artist_mbids": [...]}}, "user_name": ...}`;
`additional_info`, `mbid_mapping` and `user_name` are optional. The user is `user_name` when the listen has it,
else the `user` argument, else the file's stem (a personal export holds one user and omits the field).

Items are artists keyed by their first artist MBID, taken from `mbid_mapping` (ListenBrainz's own matching)
before `additional_info` (what the player submitted), else by `artist_name`. Weight = number of listens,
timestamp = the latest listen. Users and each user's artists in order of first appearance. No tags.

A listen with neither artist MBID nor artist name is skipped and counted. Anything else malformed (bad JSON,
a listen that is not an object, a missing `listened_at` or `track_metadata`) is an error naming the line.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path

from fedrec.shared.data._io import CatalogBuilder, HistoryBuilder, Parsed, read_lines, timestamp_value
from fedrec.shared.data.types import DataFormatError, Dataset, LoadSummary

SKIP_NO_ARTIST = "no artist name and no artist MBID"


def _iter_array(path: Path, lines: list[tuple[int, str]]) -> Iterator[tuple[int, object]]:
    """Elements of a JSON array file, each with the line on which it starts."""
    text = "\n".join(t for _, t in lines)
    line_of = [n for n, _ in lines]  # physical line of each joined line (blank lines were dropped)
    decoder = json.JSONDecoder()
    seen_pos, seen_newlines = 0, 0  # positions only move forward: count newlines incrementally

    def line_at(pos: int) -> int:
        nonlocal seen_pos, seen_newlines
        if pos >= seen_pos:
            seen_newlines += text.count("\n", seen_pos, pos)
            seen_pos = pos
            return line_of[min(seen_newlines, len(line_of) - 1)]
        return line_of[min(text.count("\n", 0, pos), len(line_of) - 1)]

    def skip_ws(pos: int) -> int:
        while pos < len(text) and text[pos] in " \t\r\n":
            pos += 1
        return pos

    pos = skip_ws(skip_ws(0) + 1)  # past "["
    if pos < len(text) and text[pos] == "]":
        return
    while True:
        try:
            value, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            raise DataFormatError(path, f"bad JSON: {e.msg}", line_at(e.pos)) from None
        yield line_at(pos), value
        pos = skip_ws(end)
        if pos < len(text) and text[pos] == ",":
            pos = skip_ws(pos + 1)
        elif pos < len(text) and text[pos] == "]":
            if skip_ws(pos + 1) != len(text):
                raise DataFormatError(path, "text after the closing `]`", line_at(skip_ws(pos + 1)))
            return
        else:
            raise DataFormatError(path, "expected `,` or `]` between listens", line_at(pos))


def _iter_listens(path: Path) -> Iterator[tuple[int, object]]:
    """`(line, value)` per listen, for JSON Lines or a JSON array (told apart by the first character)."""
    lines = read_lines(path)
    first = next(lines)
    if first[1].lstrip().startswith("["):
        yield from _iter_array(path, [first, *lines])
        return
    for line_no, text in itertools.chain([first], lines):
        try:
            yield line_no, json.loads(text)
        except json.JSONDecodeError as e:
            raise DataFormatError(path, f"bad JSON: {e.msg} (column {e.colno})", line_no) from None


def _first_mbid(block: object, path: Path, line: int) -> str:
    """First entry of `block["artist_mbids"]`, or "" when the block or list is absent or empty."""
    if block is None:
        return ""
    if not isinstance(block, dict):
        raise DataFormatError(path, f"expected an object for MBID info, found {type(block).__name__}", line)
    mbids = block.get("artist_mbids") or []
    if not isinstance(mbids, list) or not all(isinstance(m, str) for m in mbids):
        raise DataFormatError(path, f"`artist_mbids` must be a list of strings, found {mbids!r}", line)
    return next((m.strip() for m in mbids if m.strip()), "")


def parse_listenbrainz(path: str | Path, *, user: str | None = None) -> Parsed:
    """Read a ListenBrainz listens file (see the module docstring for every rule)."""
    path = Path(path)
    default_user = user or Path(path.name.removesuffix(".gz")).stem
    summary = LoadSummary(source=str(path))
    catalog = CatalogBuilder()
    histories = HistoryBuilder(summary)
    for line_no, listen in _iter_listens(path):
        summary.rows_read += 1
        if not isinstance(listen, dict):
            raise DataFormatError(path, f"expected a listen object, found {type(listen).__name__}", line_no)
        for key in ("listened_at", "track_metadata"):
            if key not in listen:
                raise DataFormatError(path, f"listen has no `{key}`", line_no)
        timestamp = timestamp_value(listen["listened_at"], "listened_at", path, line_no)
        meta = listen["track_metadata"]
        if not isinstance(meta, dict):
            raise DataFormatError(path, "`track_metadata` must be an object", line_no)
        name = meta.get("artist_name") or ""
        if not isinstance(name, str):
            raise DataFormatError(path, f"`artist_name` must be a string, found {name!r}", line_no)
        name = name.strip()
        mbid = (_first_mbid(meta.get("mbid_mapping"), path, line_no)
                or _first_mbid(meta.get("additional_info"), path, line_no))
        if not name and not mbid:
            summary.skip(SKIP_NO_ARTIST)
            continue
        listener = listen.get("user_name") or default_user
        if not isinstance(listener, str):
            raise DataFormatError(path, f"`user_name` must be a string, found {listener!r}", line_no)
        item = catalog.index(mbid or name, name or mbid)
        if name and catalog.names[item] == mbid:  # the first listens of this MBID had no name
            catalog.names[item] = name
        histories.add(listener, item, 1.0, timestamp)
    if summary.rows_read == 0:
        raise DataFormatError(path, "no listens (an empty JSON array)")
    return Parsed(catalog.build(), histories, summary)


def load_listenbrainz(path: str | Path, *, user: str | None = None) -> Dataset:
    """A ListenBrainz listens file (JSONL or JSON array) as a `Dataset`; weights are listen counts."""
    return parse_listenbrainz(path, user=user).dataset()
