"""Generic CSV loader (interactions plus optional item metadata)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from fedrec.shared.data.csvfmt import load_csv
from fedrec.shared.data.types import DataFormatError

METADATA = "item,name,tags\nm1,Miles Davis,jazz;bebop\nm2,Daft Punk,electronic|french\nm3,Nobody,\n"
INTERACTIONS = (
    "weight,item,user,timestamp\n"
    "3,m2,alice,2020-01-01T00:00:00Z\n"
    "1,m1,alice,1577840000\n"
    "2,m2,alice,1577836900\n"  # repeat of (alice, m2): weights add, latest timestamp kept
    "5,m1,bob,1577836800\n"
)


def write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return path


def test_happy_path_with_metadata(tmp_path: Path) -> None:
    """Catalog = metadata order with split tags; columns in any order; ISO and unix timestamps."""
    ds = load_csv(write(tmp_path / "plays.csv", INTERACTIONS), write(tmp_path / "items.csv", METADATA))
    assert ds.catalog.item_ids == ["m1", "m2", "m3"]
    assert ds.catalog.names == ["Miles Davis", "Daft Punk", "Nobody"]
    assert ds.catalog.tags == [["jazz", "bebop"], ["electronic", "french"], []]
    alice, bob = ds.users
    assert (alice.user_id, bob.user_id) == ("alice", "bob")
    np.testing.assert_array_equal(alice.items, [1, 0])
    np.testing.assert_array_equal(alice.weights, [5.0, 1.0])
    np.testing.assert_array_equal(alice.timestamps, [1577836900.0, 1577840000.0])
    assert (ds.summary.rows_read, ds.summary.rows_used, ds.summary.duplicates_merged) == (4, 4, 1)


def test_without_metadata_or_optional_columns(tmp_path: Path) -> None:
    """No metadata: items named by id in first-seen order; no weight column: 1 per row; no timestamps."""
    ds = load_csv(write(tmp_path / "plays.csv", 'user,item\nu1,"Simon, Garfunkel"\nu1,Queen\nu1,Queen\n'))
    assert ds.catalog.item_ids == ds.catalog.names == ["Simon, Garfunkel", "Queen"]
    np.testing.assert_array_equal(ds.users[0].weights, [1.0, 2.0])
    assert ds.users[0].timestamps is None


@pytest.mark.parametrize(
    ("text", "line", "match"),
    [
        ("user,weight\nu,1\n", 1, "missing column(s) `item`"),
        ("user,item,genre2\nu,i,1\n", 1, "unknown column `genre2` (expected user, item, optionally timestamp, "
                                          "weight; also accepted:"),
        ("1,31,2.5\n1,32,3\n", 1, "the first line is not a header row"),
        ("user,item,User\nu,i,v\n", 1, "column `user` appears twice"),
        ("user,item\nu,i\nu,i,3\n", 3, "expected 2 comma-separated columns (user, item), found 3; quote a field "
                                          "that contains a comma"),
        ("user,item\nu,i\nUSER,item\n", 3, "header row repeated"),
        ("user,item,weight\nu,i,lots\n", 2, "`weight` must be a number"),
        ("user,item,weight\nu,i,-1\n", 2, "`weight` must be >= 0"),
        ("user,item,weight\nu,i,nan\n", 2, "`weight` must be finite"),
        ("user,item,timestamp\nu,i,last tuesday\n", 2, "`timestamp` must be unix seconds or an ISO 8601"),
        ("user,item\n,i\n", 2, "empty `user`"),
        ('user,item\nu,"i\n', 2, "bad CSV quoting"),
        ("user,item\n", None, "no rows below the header"),
        ("", None, "empty file"),
        (b"user,item\nu,caf\xe9\n", 2, "bytes not valid UTF-8 (byte 0xe9 at column 6)"),
    ],
)
def test_malformed_interactions(tmp_path: Path, text: str | bytes, line: int | None, match: str) -> None:
    where = f"plays.csv:{line}: " if line else "plays.csv: "
    with pytest.raises(DataFormatError, match=re.escape(where) + ".*" + re.escape(match)):
        load_csv(write(tmp_path / "plays.csv", text))


def test_unknown_item_names_interactions_file_and_line(tmp_path: Path) -> None:
    plays = write(tmp_path / "plays.csv", INTERACTIONS + "2,m9,bob,1577836800\n")
    with pytest.raises(DataFormatError, match=re.escape("plays.csv:6: item 'm9' is not in the metadata file")):
        load_csv(plays, write(tmp_path / "items.csv", METADATA))


@pytest.mark.parametrize(
    ("text", "line", "match"),
    [
        (METADATA + "m1,Again,\n", 5, "item 'm1' already defined on line 2"),
        ("item,name\nm1,\n", 2, "item 'm1' has an empty `name`"),
        ("item,title2\nm1,x\n", 1, "unknown column `title2`"),
        ("item,name,tags\nm1,x\n", 2, "expected 3 comma-separated columns"),
    ],
)
def test_malformed_metadata(tmp_path: Path, text: str, line: int, match: str) -> None:
    plays = write(tmp_path / "plays.csv", "user,item\nu,m1\n")
    with pytest.raises(DataFormatError, match=re.escape(f"items.csv:{line}: {match}")):
        load_csv(plays, write(tmp_path / "items.csv", text))


def test_other_data_sets_column_names_are_read_with_a_note(tmp_path: Path) -> None:
    """MovieLens-style names (`userId`, `movieId`, `rating`, `timestamp`; `title`, `genres`) are read as fedrec's
    columns, and the load summary says which alias was read as what."""
    plays = write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n1,31,2.5,1260759144\n1,32,4,1260759179\n")
    items = write(tmp_path / "movies.csv", 'movieId,title,genres\n31,"Dangerous Minds (1995)",Drama\n'
                                          '32,"Twelve Monkeys, The (1995)",Mystery|Sci-Fi\n')
    ds = load_csv(plays, items)
    assert ds.catalog.names == ["Dangerous Minds (1995)", "Twelve Monkeys, The (1995)"]
    assert ds.catalog.tags[1] == ["Mystery", "Sci-Fi"]
    np.testing.assert_array_equal(ds.users[0].weights, [2.5, 4.0])
    assert any("`rating` read as `weight`" in n for n in ds.summary.notes)
    assert any("`movieId` read as `item`" in n for n in ds.summary.notes)


@pytest.mark.parametrize("sep", ["\t", ";", "|"])
def test_separator_is_read_from_the_header(tmp_path: Path, sep: str) -> None:
    """Tab-, semicolon- and pipe-separated files with a header read like the comma-separated one."""
    ds = load_csv(write(tmp_path / "plays.csv", f"user{sep}item{sep}weight\nu1{sep}a, b{sep}3\n"))
    assert ds.catalog.item_ids == ["a, b"]
    np.testing.assert_array_equal(ds.users[0].weights, [3.0])
