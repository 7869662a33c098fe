"""HetRec 2011 Last.fm-2K (a directory of tab-separated `.dat` files, each with a header row).

- `artists.dat` (id, name, url, pictureURL) is the catalog, in file order; item ids are the artistIDs.
- `user_artists.dat` (userID, artistID, weight) holds the histories; weight is the listen count. Users in file
  order (the file sorts them by userID), each user's artists in file order. An artistID missing from
  `artists.dat` is an error: histories and catalog would disagree, and every ranking metric would be off
  (the published file has none).
- `tags.dat` (tagID, tagValue) and `user_taggedartists.dat` (userID, artistID, tagID, day, month, year) give
  each artist its top tags: the tags most users put on it, ties broken by tag id, at most `MAX_TAGS`.
  Aggregated over all users they are public catalog metadata. Both files are optional (no tags without them).
  A tag assignment for an artist not in `artists.dat` is skipped and counted (the published file has such rows
  for 390 artists nobody's history contains: 1,538 rows); an unknown tagID is an error, since `tags.dat` is the
  vocabulary.

Encodings: the published `artists.dat` is UTF-8, `tags.dat` is Latin-1 (8 lines, e.g. "tropicália").
Every file is read as UTF-8, with a per-line cp1252 fallback that the summary reports. Two published artist
names are double-encoded at the source ("BallakÃ© Sissoko", "OSKÃO", as in their Last.fm URLs): kept as published.
`LoadSummary.rows_read/rows_used` count `user_artists.dat` rows; skipped tag rows name their file in the reason.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from fedrec.shared.data._io import (
    HistoryBuilder,
    Parsed,
    check_header,
    is_header,
    parse_int,
    parse_weight,
    read_lines,
    repeated_header,
    split_columns,
)
from fedrec.shared.data.types import Catalog, DataFormatError, Dataset, LoadSummary

MAX_TAGS = 10  # tags kept per artist, most used first
LEGACY_ENCODING = "cp1252"  # what the lines that are not UTF-8 are (tags.dat is Latin-1; cp1252 is a superset)

ARTISTS_COLUMNS = ("id", "name", "url", "pictureURL")
TAGS_COLUMNS = ("tagID", "tagValue")
USER_ARTISTS_COLUMNS = ("userID", "artistID", "weight")
TAGGED_COLUMNS = ("userID", "artistID", "tagID", "day", "month", "year")


def _rows(path: Path, columns: tuple[str, ...], summary: LoadSummary) -> Iterator[tuple[int, list[str]]]:
    """Data rows of one `.dat` file as `(line, fields)`: header checked, repeated header an error."""
    lines = read_lines(path, fallback=LEGACY_ENCODING, summary=summary)
    line_no, text = next(lines)
    check_header(text.split("\t"), columns, path, line_no)
    for line_no, text in lines:
        fields = split_columns(text, "\t", columns, path, line_no)
        if is_header(fields, columns):
            raise repeated_header(path, line_no)
        yield line_no, fields


def _read_artists(path: Path, summary: LoadSummary) -> tuple[list[str], list[str], dict[int, int]]:
    """Artist ids, names and artistID -> internal index, in file order."""
    ids: list[str] = []
    names: list[str] = []
    index: dict[int, int] = {}
    first_line: dict[int, int] = {}
    for line_no, fields in _rows(path, ARTISTS_COLUMNS, summary):
        artist = parse_int(fields[0], "id", path, line_no)
        name = fields[1].strip()
        if artist in index:
            raise DataFormatError(path, f"artist id {artist} already defined on line {first_line[artist]}",
                                  line_no)
        if not name:
            raise DataFormatError(path, f"artist id {artist} has an empty name", line_no)
        index[artist], first_line[artist] = len(ids), line_no
        ids.append(str(artist))
        names.append(name)
    if not ids:
        raise DataFormatError(path, "no artists (only a header row)")
    return ids, names, index


def _read_tag_names(path: Path, summary: LoadSummary) -> dict[int, str]:
    tags: dict[int, str] = {}
    for line_no, fields in _rows(path, TAGS_COLUMNS, summary):
        tag = parse_int(fields[0], "tagID", path, line_no)
        if tag in tags:
            raise DataFormatError(path, f"tagID {tag} defined twice", line_no)
        value = fields[1].strip()
        if not value:
            raise DataFormatError(path, f"tagID {tag} has an empty value", line_no)
        tags[tag] = value
    return tags


def _read_top_tags(dir_path: Path, artist_index: dict[int, int], summary: LoadSummary) -> list[list[str]]:
    """Top `MAX_TAGS` tags per artist (by number of distinct users who applied the tag), or none at all."""
    tags_path, tagged_path = dir_path / "tags.dat", dir_path / "user_taggedartists.dat"
    empty: list[list[str]] = [[] for _ in artist_index]
    if not tags_path.exists() and not tagged_path.exists():
        summary.note("no tags.dat / user_taggedartists.dat: the catalog has no tags")
        return empty
    for needed in (tags_path, tagged_path):
        if not needed.exists():
            raise DataFormatError(needed, "missing (tags.dat and user_taggedartists.dat come together)")
    tag_names = _read_tag_names(tags_path, summary)

    taggers: dict[tuple[int, int], set[int]] = {}  # (internal artist index, tagID) -> userIDs
    n_rows = 0
    for line_no, fields in _rows(tagged_path, TAGGED_COLUMNS, summary):
        n_rows += 1
        user, artist, tag = (parse_int(fields[k], TAGGED_COLUMNS[k], tagged_path, line_no) for k in range(3))
        for k in range(3, 6):  # the date is unused, but a broken one means a broken row
            parse_int(fields[k], TAGGED_COLUMNS[k], tagged_path, line_no)
        if tag not in tag_names:
            raise DataFormatError(tagged_path, f"tagID {tag} is not in tags.dat", line_no)
        i = artist_index.get(artist)
        if i is None:
            summary.skip(f"{tagged_path.name}: artist not in artists.dat (tag assignment unused)")
            continue
        users = taggers.setdefault((i, tag), set())
        if user in users:
            summary.skip(f"{tagged_path.name}: repeat of a (user, artist, tag) triple (counted once)")
        users.add(user)

    counts: list[Counter[int]] = [Counter() for _ in artist_index]
    for (i, tag), users in taggers.items():
        counts[i][tag] = len(users)
    top = [[tag_names[t] for t, _ in sorted(c.items(), key=lambda tn: (-tn[1], tn[0]))[:MAX_TAGS]] for c in counts]
    n_tagged = sum(1 for t in top if t)
    summary.note(f"{tagged_path.name}: {n_rows} tag assignments give tags to {n_tagged} of {len(top)} artists")
    return top


def parse_hetrec(dir_path: str | Path) -> Parsed:
    """Read a HetRec Last.fm-2K directory (see the module docstring for every rule)."""
    dir_path = Path(dir_path)
    if not dir_path.is_dir():
        raise DataFormatError(dir_path, "not a directory (expected the HetRec Last.fm-2K folder)")
    for required in ("artists.dat", "user_artists.dat"):
        if not (dir_path / required).exists():
            raise DataFormatError(dir_path / required, "missing (needed for a HetRec Last.fm-2K folder)")
    summary = LoadSummary(source=str(dir_path))
    ids, names, artist_index = _read_artists(dir_path / "artists.dat", summary)
    tags = _read_top_tags(dir_path, artist_index, summary)

    ua_path = dir_path / "user_artists.dat"
    histories = HistoryBuilder(summary)
    for line_no, fields in _rows(ua_path, USER_ARTISTS_COLUMNS, summary):
        summary.rows_read += 1
        user = parse_int(fields[0], "userID", ua_path, line_no)
        artist = parse_int(fields[1], "artistID", ua_path, line_no)
        weight = parse_weight(fields[2], "weight", ua_path, line_no)
        i = artist_index.get(artist)
        if i is None:
            raise DataFormatError(ua_path, f"artistID {artist} is not in artists.dat", line_no)
        histories.add(str(user), i, weight)
    if summary.rows_read == 0:
        raise DataFormatError(ua_path, "no listening rows (only a header row)")
    return Parsed(Catalog(ids, names, tags), histories, summary)


def load_hetrec(dir_path: str | Path) -> Dataset:
    """The HetRec Last.fm-2K directory as a `Dataset` (17,632 artists and 1,892 users when published)."""
    return parse_hetrec(dir_path).dataset()
