"""Last.fm-1K TSV loader."""

from __future__ import annotations

import gzip
import re
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from fedrec.shared.data.lastfm1k import SKIP_COLUMNS, SKIP_NO_ARTIST, load_lastfm1k
from fedrec.shared.data.types import DataFormatError

MBID_A = "a74b1b7f-71a5-4011-9441-d0b5e4122711"
ROWS = [
    f"user_000001\t2009-05-04T23:08:57Z\t{MBID_A}\tRadiohead\t\tReckoner",
    "user_000001\t2009-05-04T13:54:10Z\t\tLocal Band\t\tSong",
    f"user_000001\t2009-05-03T10:00:00Z\t{MBID_A}\tRadiohead\t\tNude",
    "user_000002\t2009-05-01T00:00:00Z\t\tLocal Band\t\tSong",
    "user_000002\t2009-04-01T00:00:00Z\t\t\t\tUnknown track",
]


def write(path: Path, lines: list[str], *, ending: str = "\n") -> Path:
    path.write_text(ending.join(lines) + ending, encoding="utf-8")
    return path


def unix(iso: str) -> float:
    return datetime.fromisoformat(iso).replace(tzinfo=UTC).timestamp()


def test_happy_path(tmp_path: Path) -> None:
    """Artists keyed by MBID else name; weight = plays; timestamp = latest play."""
    ds = load_lastfm1k(write(tmp_path / "listens.tsv", ROWS))
    assert ds.catalog.item_ids == [MBID_A, "Local Band"]
    assert ds.catalog.names == ["Radiohead", "Local Band"]
    assert ds.catalog.tags == [[], []]
    assert [u.user_id for u in ds.users] == ["user_000001", "user_000002"]
    u1 = ds.users[0]
    np.testing.assert_array_equal(u1.items, [0, 1])
    np.testing.assert_array_equal(u1.weights, [2.0, 1.0])
    np.testing.assert_array_equal(u1.timestamps, [unix("2009-05-04T23:08:57"), unix("2009-05-04T13:54:10")])


def test_summary_counts(tmp_path: Path) -> None:
    """A row without artist is skipped with its reason; repeated plays are merged rows."""
    s = load_lastfm1k(write(tmp_path / "listens.tsv", ROWS, ending="\r\n")).summary
    assert (s.rows_read, s.rows_used, s.duplicates_merged) == (5, 4, 1)
    assert s.skipped == {SKIP_NO_ARTIST: 1}


def test_name_filled_in_when_first_row_lacks_it(tmp_path: Path) -> None:
    rows = [f"u\t2009-05-04T23:08:57Z\t{MBID_A}\t\t\tx", f"u\t2009-05-04T23:08:58Z\t{MBID_A}\tRadiohead\t\ty"]
    assert load_lastfm1k(write(tmp_path / "l.tsv", rows)).catalog.names == ["Radiohead"]


def test_gzip_file(tmp_path: Path) -> None:
    path = tmp_path / "listens.tsv.gz"
    path.write_bytes(gzip.compress(("\n".join(ROWS) + "\n").encode()))
    assert len(load_lastfm1k(path).users) == 2


def test_wrong_column_count_strict_and_lenient(tmp_path: Path) -> None:
    """Strict: an error naming the line. strict=False: skipped and counted."""
    too_few = "user_000001\t2009-05-04T23:08:57Z\tx\tToo\tFew"
    path = write(tmp_path / "listens.tsv", [*ROWS[:2], too_few, *ROWS[2:]])
    with pytest.raises(DataFormatError, match=re.escape("listens.tsv:3: expected 6 tab-separated columns")):
        load_lastfm1k(path)
    ds = load_lastfm1k(path, strict=False)
    assert ds.summary.skipped == {SKIP_NO_ARTIST: 1, SKIP_COLUMNS: 1}
    assert ds.summary.rows_read == 6


@pytest.mark.parametrize(
    ("content", "line", "match"),
    [
        ("\n".join([*ROWS, "user_000003\tyesterday\t\tX\t\ty"]).encode(), 6, "`timestamp` must be unix seconds"),
        ("\n".join([*ROWS[:3], "userid\ttimestamp\ta\tb\tc\td", *ROWS[3:]]).encode(), 4, "header row found"),
        ("\n".join([*ROWS, "\t2009-05-04T23:08:57Z\t\tX\t\ty"]).encode(), 6, "empty `userid`"),
        ("\n".join(ROWS).encode() + b"\nu\t2009-05-04T23:08:57Z\t\tBj\xf6rk\t\ty\n", 6, "not valid UTF-8"),
        (b"", None, "empty file"),
        (b"\n\n", None, "empty file"),
    ],
)
def test_malformed(tmp_path: Path, content: bytes, line: int | None, match: str) -> None:
    path = tmp_path / "listens.tsv"
    path.write_bytes(content)
    where = f"listens.tsv:{line}:" if line else "listens.tsv:"
    with pytest.raises(DataFormatError, match=re.escape(where) + ".*" + re.escape(match)) as info:
        load_lastfm1k(path)
    assert info.value.line == line
