"""Last.fm-1K (`userid-timestamp-artid-artname-traid-traname.tsv`): one listen per line, no header.

Columns (tab-separated): userid, timestamp (ISO 8601, `2009-05-04T23:08:57Z`), musicbrainz-artist-id,
artist-name, musicbrainz-track-id, track-name. Items are artists, keyed by artist MBID when the row has one
and by artist name otherwise (the same name with and without an MBID gives two items: the dump does not say
they are one). The display name is the first non-empty name seen for the key. Weight = number of listens;
timestamp = the latest listen (unix seconds). Users and each user's artists in order of first appearance
(the published dump lists each user's listens newest first). The catalog has no tags.

A row with neither artist MBID nor artist name is skipped and counted. A row with the wrong number of columns
is an error; `strict=False` skips and counts such rows instead (others report nine of them in the 19-million
line published dump).
"""

from __future__ import annotations

from pathlib import Path

from fedrec.shared.data._io import (
    CatalogBuilder,
    HistoryBuilder,
    Parsed,
    check_column_count,
    parse_timestamp,
    read_lines,
)
from fedrec.shared.data.types import DataFormatError, Dataset, LoadSummary

COLUMNS = ("userid", "timestamp", "musicbrainz-artist-id", "artist-name", "musicbrainz-track-id", "track-name")
SKIP_NO_ARTIST = "no artist name and no artist MBID"
SKIP_COLUMNS = "wrong number of columns (strict=False)"


def parse_lastfm1k(path: str | Path, *, strict: bool = True) -> Parsed:
    """Read a Last.fm-1K TSV file (see the module docstring for every rule)."""
    path = Path(path)
    summary = LoadSummary(source=str(path))
    catalog = CatalogBuilder()
    histories = HistoryBuilder(summary)
    for line_no, text in read_lines(path):
        summary.rows_read += 1
        fields = text.split("\t")
        if len(fields) != len(COLUMNS):
            if strict:
                check_column_count(fields, "\t", COLUMNS, path, line_no)
            summary.skip(SKIP_COLUMNS)
            continue
        user, when, artist_mbid, artist_name = (f.strip() for f in fields[:4])
        if user.lower() == COLUMNS[0] and when.lower() == COLUMNS[1]:
            raise DataFormatError(path, "header row found; Last.fm-1K files have none", line_no)
        if not user:
            raise DataFormatError(path, "empty `userid`", line_no)
        timestamp = parse_timestamp(when, "timestamp", path, line_no)
        if not artist_mbid and not artist_name:
            summary.skip(SKIP_NO_ARTIST)
            continue
        item = catalog.index(artist_mbid or artist_name, artist_name or artist_mbid)
        if artist_name and catalog.names[item] == artist_mbid:  # the first rows of this MBID had no name
            catalog.names[item] = artist_name
        histories.add(user, item, 1.0, timestamp)
    return Parsed(catalog.build(), histories, summary)


def load_lastfm1k(path: str | Path, *, strict: bool = True) -> Dataset:
    """A Last.fm-1K TSV file as a `Dataset`; weights are listen counts."""
    return parse_lastfm1k(path, strict=strict).dataset()
