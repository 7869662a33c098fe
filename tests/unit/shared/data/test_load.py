"""The dispatcher (`load_dataset`) and one user's history onto a model's catalog (`load_history`)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from fedrec.shared.data.load import (
    NOT_IN_CATALOG,
    OTHER_USERS,
    detect_format,
    is_auto_sized,
    load_dataset,
    load_history,
    with_users,
)
from fedrec.shared.data.types import Catalog, DataFormatError

CATALOG = Catalog(
    item_ids=["51", "52", "53", "54"],
    names=["Duran Duran", "Morcheeba", "Air", "Hooverphonic"],
    tags=[["new wave"], ["trip-hop"], ["electronic"], ["trip-hop"]],
)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("name", "fmt"),
    [("a.jsonl", "listenbrainz"), ("a.json", "listenbrainz"), ("a.csv", "csv")],
)
def test_detect_format_by_suffix(tmp_path: Path, name: str, fmt: str) -> None:
    assert detect_format(str(write(tmp_path / name, "x"))) == fmt


LASTFM1K_ROW = "user_000001\t2009-05-04T23:08:57Z\tf1b1cf71\tDeep Dish\t\tFuck Me Im Famous\n"


@pytest.mark.parametrize(
    ("first_line", "fmt"),
    [(LASTFM1K_ROW, "lastfm1k"), ("user\titem\trating\n1\t31\t2.5\n", "csv"),
     ("userId\tmovieId\n1\t31\n", "csv")],
)
def test_tsv_is_detected_by_its_columns(tmp_path: Path, first_line: str, fmt: str) -> None:
    """A .tsv is Last.fm-1K only when it looks like it (6 fields, no header); a generic header makes it a
    tab-separated generic file, also gzipped."""
    import gzip

    assert detect_format(str(write(tmp_path / "a.tsv", first_line))) == fmt
    gz = tmp_path / "b.TSV.gz"
    gz.write_bytes(gzip.compress(first_line.encode()))
    assert detect_format(str(gz)) == fmt


def test_tsv_that_is_neither_says_what_either_needs(tmp_path: Path) -> None:
    """MovieLens-style rows without a header (4 fields) are not silently read as Last.fm-1K."""
    bad = write(tmp_path / "ratings.tsv", "196\t242\t3\t881250949\n")
    with pytest.raises(DataFormatError, match=re.escape("ratings.tsv:1: a .tsv file is either generic (a header row")
                       + ".*has 4 field"):
        detect_format(str(bad))


def test_unknown_suffix_names_the_data_format_option(tmp_path: Path) -> None:
    """`ratings.data` cannot be told from its suffix: the error names --data-format (the option simulate has)."""
    with pytest.raises(DataFormatError, match="--data-format"):
        detect_format(str(write(tmp_path / "ratings.data", "user\titem\n1\t2\n")))
    ds = load_dataset(str(tmp_path / "ratings.data"), fmt="csv")
    assert [u.user_id for u in ds.users] == ["1"]


def test_auto_sized_synthetic_is_resolved_before_reading() -> None:
    """`users=auto` has no size of its own: reading it unresolved is an error, `with_users` gives it one."""
    spec = "synthetic:users=auto,items=50"
    assert is_auto_sized(spec) and not is_auto_sized("synthetic:users=3")
    with pytest.raises(ValueError, match="users=auto is sized by the federation"):
        load_dataset(spec)
    assert with_users(spec, 7) == "synthetic:users=7,items=50"
    assert len(load_dataset(with_users(spec, 7)).users) == 7
    assert with_users("data.csv", 7) == "data.csv"


def test_detect_format_folders_and_errors(tmp_path: Path) -> None:
    write(tmp_path / "h" / "user_artists.dat", "x")
    assert detect_format(str(tmp_path / "h")) == "hetrec"
    assert detect_format("synthetic:users=3") == "synthetic"
    with pytest.raises(DataFormatError, match="without user_artists.dat"):
        detect_format(str(tmp_path))
    with pytest.raises(DataFormatError, match="no such file"):
        detect_format(str(tmp_path / "missing.csv"))
    with pytest.raises(DataFormatError, match=r"a\.txt: cannot tell the format"):
        detect_format(str(write(tmp_path / "a.txt", "x")))


def test_load_dataset_dispatches(tmp_path: Path) -> None:
    """Each format reaches its loader; `fmt` overrides the suffix; `metadata` reaches the CSV loader."""
    plays = write(tmp_path / "plays.txt", "user,item\nu,m1\n")
    items = write(tmp_path / "items.csv", "item,name,tags\nm1,Miles Davis,jazz\n")
    ds = load_dataset(str(plays), fmt="csv", metadata=str(items))
    assert ds.catalog.text(0) == "Miles Davis | jazz"
    tsv = write(tmp_path / "l.tsv", "u\t2009-05-04T23:08:57Z\t\tAir\t\tt\n")
    assert load_dataset(str(tsv)).catalog.names == ["Air"]
    lb = write(tmp_path / "bob.jsonl", json.dumps({"listened_at": 1, "track_metadata": {"artist_name": "Air"}}))
    assert load_dataset(str(lb)).users[0].user_id == "bob"
    assert load_dataset(str(lb), user="carol").users[0].user_id == "carol"
    with pytest.raises(ValueError, match="`metadata` applies to the csv format only"):
        load_dataset(str(tsv), metadata=str(items))
    with pytest.raises(ValueError, match="Unknown format 'parquet'"):
        load_dataset(str(tsv), fmt="parquet")


def test_load_dataset_synthetic_spec() -> None:
    ds = load_dataset("synthetic:users=7,items=50,seed=2")
    assert (len(ds.users), len(ds.catalog)) == (7, 50)
    assert len(load_dataset("synthetic").users) == 60
    with pytest.raises(ValueError, match="Unknown synthetic option 'colour=red'"):
        load_dataset("synthetic:colour=red")
    with pytest.raises(ValueError, match="`users` must be int"):
        load_dataset("synthetic:users=many")


def test_load_history_maps_by_id_then_name(tmp_path: Path) -> None:
    """Ids match first, then case-folded names; unknown artists are skipped and counted by rows."""
    rows = ["user,item,weight", "me,52,10", "me,air,4", "me,Unknown Band,2", "me,unknown band,1", "me,Morcheeba,5"]
    path = write(tmp_path / "me.csv", "\n".join(rows) + "\n")
    history, summary = load_history(path, CATALOG)
    assert history.user_id == "me"
    np.testing.assert_array_equal(history.items, [1, 2])
    np.testing.assert_array_equal(history.weights, [15.0, 4.0])  # "52" and "Morcheeba" are one artist
    assert summary.skipped == {NOT_IN_CATALOG: 2}
    assert (summary.rows_read, summary.rows_used, summary.duplicates_merged) == (5, 3, 1)


def test_load_history_listenbrainz_keeps_timestamps(tmp_path: Path) -> None:
    mbid = "0383dadf-2a4e-4d10-a46a-e9e041da8eb3"
    listens = [
        {"listened_at": 100,
         "track_metadata": {"artist_name": "Hooverphonic", "mbid_mapping": {"artist_mbids": [mbid]}}},
        {"listened_at": 300, "track_metadata": {"artist_name": "HOOVERPHONIC"}},
        {"listened_at": 200, "track_metadata": {"artist_name": "Duran Duran"}},
    ]
    path = write(tmp_path / "alice.jsonl", "\n".join(json.dumps(x) for x in listens))
    history, summary = load_history(path, CATALOG)
    np.testing.assert_array_equal(history.items, [3, 0])
    np.testing.assert_array_equal(history.weights, [2.0, 1.0])
    np.testing.assert_array_equal(history.timestamps, [300.0, 200.0])
    assert summary.duplicates_merged == 1 and not summary.skipped


def test_load_history_several_users(tmp_path: Path) -> None:
    """Several users need `user=`; the other users' rows are counted, not silently dropped."""
    path = write(tmp_path / "all.csv", "user,item\na,51\nb,52\nb,53\nc,54\n")
    with pytest.raises(DataFormatError, match=re.escape("all.csv: holds 3 users (a, b, c); pass `user=`")):
        load_history(path, CATALOG)
    history, summary = load_history(path, CATALOG, user="b")
    np.testing.assert_array_equal(history.items, [1, 2])
    assert summary.skipped == {OTHER_USERS: 2}
    assert summary.rows_used == 2
    with pytest.raises(DataFormatError, match="no rows for user 'z'"):
        load_history(path, CATALOG, user="z")


def test_load_history_errors_keep_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path / "me.csv", "user,item,weight\nme,52,-1\n")
    with pytest.raises(DataFormatError, match=re.escape("me.csv:2: `weight` must be >= 0")):
        load_history(path, CATALOG)
