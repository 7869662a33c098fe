"""HetRec Last.fm-2K loader: a small fixture folder, every error type, and the published data set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedrec.shared.data.hetrec import MAX_TAGS, load_hetrec
from fedrec.shared.data.split import split_users
from fedrec.shared.data.types import DataFormatError

ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())
REAL = ROOT.parent / "shared/data/hetrec2011-lastfm-2k"

ARTISTS = "id\tname\turl\tpictureURL\n10\tMetallica\thttp://a\thttp://b\n20\tDaft Punk\thttp://a\thttp://b\n" \
          "30\tBjörk\thttp://a\thttp://b\n"
TAGS = b"tagID\ttagValue\r\n1\tmetal\r\n2\telectronic\r\n3\ttropic\xe1lia\r\n4\tfrench\r\n"
USER_ARTISTS = "userID\tartistID\tweight\r\n2\t20\t50\r\n2\t10\t7\r\n5\t30\t3\r\n5\t20\t1\r\n"
TAGGED = (
    "userID\tartistID\ttagID\tday\tmonth\tyear\n"
    "2\t10\t1\t1\t4\t2009\n"
    "5\t10\t1\t1\t4\t2009\n"  # metal: 2 users on Metallica
    "2\t20\t4\t1\t4\t2009\n"  # Daft Punk: french 1 user, electronic 1 user -> tie, lower tagID (2) first
    "5\t20\t2\t1\t4\t2009\n"
    "5\t30\t3\t1\t4\t2009\n"
    "2\t99\t1\t1\t4\t2009\n"  # artist 99 is not in artists.dat: skipped, counted
)


def write_dir(root: Path, **overrides: str | bytes) -> Path:
    """A HetRec folder with the fixture files; `overrides` replace a file's content (None removes it)."""
    files: dict[str, str | bytes | None] = {
        "artists.dat": ARTISTS, "tags.dat": TAGS, "user_artists.dat": USER_ARTISTS,
        "user_taggedartists.dat": TAGGED,
    }
    files.update({name.replace("_dat", ".dat"): content for name, content in overrides.items()})
    root.mkdir(exist_ok=True)
    for name, content in files.items():
        if content is None:
            continue
        data = content.encode("utf-8") if isinstance(content, str) else content
        (root / name).write_bytes(data)
    return root


def raises_at(path_name: str, line: int | None, match: str):
    """Expect a DataFormatError naming `path_name` (and `line`) whose message contains `match`."""
    where = f"{path_name}:{line}:" if line is not None else f"{path_name}:"
    return pytest.raises(DataFormatError, match=f"{where}.*{match}")


def test_happy_path_catalog_users_and_tags(tmp_path: Path) -> None:
    """Catalog in artists.dat order, users/items in file order, tags ranked by users then tag id."""
    # Prepare
    d = write_dir(tmp_path / "h")
    # Execute
    ds = load_hetrec(d)
    # Assert
    assert ds.catalog.item_ids == ["10", "20", "30"]
    assert ds.catalog.names == ["Metallica", "Daft Punk", "Björk"]
    assert ds.catalog.tags == [["metal"], ["electronic", "french"], ["tropicália"]]
    assert [u.user_id for u in ds.users] == ["2", "5"]
    np.testing.assert_array_equal(ds.users[0].items, [1, 0])
    np.testing.assert_array_equal(ds.users[0].weights, [50.0, 7.0])
    np.testing.assert_array_equal(ds.users[1].items, [2, 1])
    assert ds.users[0].timestamps is None
    assert ds.users[0].items.dtype == np.int64 and ds.users[0].weights.dtype == np.float64


def test_summary_counts_and_encoding_note(tmp_path: Path) -> None:
    """Rows, the skipped tag row for an unknown artist and the Latin-1 fallback are all reported."""
    ds = load_hetrec(write_dir(tmp_path / "h"))
    s = ds.summary
    assert (s.rows_read, s.rows_used, s.duplicates_merged) == (4, 4, 0)
    assert s.skipped == {"user_taggedartists.dat: artist not in artists.dat (tag assignment unused)": 1}
    assert any("tags.dat: 1 lines are not valid UTF-8" in n and "line 4" in n for n in s.notes)
    assert any("note:" in line for line in s.lines())


def test_duplicate_pairs_are_merged(tmp_path: Path) -> None:
    """A repeated (user, artist) row adds its weight to the first and is counted."""
    d = write_dir(tmp_path / "h", user_artists_dat=USER_ARTISTS + "2\t10\t3\r\n")
    ds = load_hetrec(d)
    np.testing.assert_array_equal(ds.users[0].weights, [50.0, 10.0])
    assert ds.summary.duplicates_merged == 1
    assert ds.summary.rows_used == 5


def test_tags_keep_at_most_max_tags(tmp_path: Path) -> None:
    """With more than MAX_TAGS tags the most used ones survive, ties by tag id."""
    n = MAX_TAGS + 3
    tags = "tagID\ttagValue\n" + "".join(f"{t}\ttag{t}\n" for t in range(1, n + 1))
    rows = ["userID\tartistID\ttagID\tday\tmonth\tyear"]
    rows += [f"{u}\t10\t{t}\t1\t1\t2010" for t in range(1, n + 1) for u in range(1, 2 + (t == n))]
    ds = load_hetrec(write_dir(tmp_path / "h", tags_dat=tags, user_taggedartists_dat="\n".join(rows) + "\n"))
    assert ds.catalog.tags[0] == [f"tag{n}"] + [f"tag{t}" for t in range(1, MAX_TAGS)]


def test_tag_files_are_optional_together(tmp_path: Path) -> None:
    ds = load_hetrec(write_dir(tmp_path / "h", tags_dat=None, user_taggedartists_dat=None))
    assert ds.catalog.tags == [[], [], []]
    with raises_at("tags.dat", None, "missing"):
        load_hetrec(write_dir(tmp_path / "g", tags_dat=None))


@pytest.mark.parametrize(
    ("file", "content", "line", "match"),
    [
        ("user_artists_dat", USER_ARTISTS + "5\t77\t1\r\n", 6, "artistID 77 is not in artists.dat"),
        ("user_artists_dat", USER_ARTISTS + "5\t10\tmany\r\n", 6, "`weight` must be a number"),
        ("user_artists_dat", USER_ARTISTS + "5\t10\t-4\r\n", 6, "`weight` must be >= 0"),
        ("user_artists_dat", USER_ARTISTS + "x5\t10\t4\r\n", 6, "`userID` must be an integer"),
        ("user_artists_dat", USER_ARTISTS + "5\t10\r\n", 6, "expected 3 tab-separated columns"),
        ("user_artists_dat", USER_ARTISTS + "userID\tartistID\tweight\r\n", 6, "header row repeated"),
        ("user_artists_dat", "2\t20\t50\n", 1, "expected the header row"),
        ("user_artists_dat", "", None, "empty file"),
        ("user_artists_dat", "userID\tartistID\tweight\n", None, "no listening rows"),
        ("artists_dat", ARTISTS + "10\tAgain\thttp://a\thttp://b\n", 5, "already defined on line 2"),
        ("artists_dat", ARTISTS.encode() + b"40\tBad\x81\thttp://a\thttp://b\n", 5,  # 0x81: not cp1252 either
         "neither as UTF-8 nor as cp1252"),
        ("tags_dat", "tagID\ttagValue\n1\tmetal\n1\tmetal again\n", 3, "tagID 1 defined twice"),
        ("user_taggedartists_dat", TAGGED + "2\t10\t42\t1\t4\t2009\n", 8, "tagID 42 is not in tags.dat"),
        ("user_taggedartists_dat", TAGGED + "2\t10\t1\t1\tApril\t2009\n", 8, "`month` must be an integer"),
    ],
)
def test_malformed_files_name_file_and_line(tmp_path: Path, file: str, content: str | bytes, line: int | None,
                                            match: str) -> None:
    """Every kind of bad input raises DataFormatError naming the file and the line."""
    d = write_dir(tmp_path / "h", **{file: content})
    with raises_at(file.replace("_dat", ".dat"), line, match):
        load_hetrec(d)


def test_missing_folder_or_file(tmp_path: Path) -> None:
    with raises_at("nowhere", None, "not a directory"):
        load_hetrec(tmp_path / "nowhere")
    with raises_at("user_artists.dat", None, "missing"):
        load_hetrec(write_dir(tmp_path / "h", user_artists_dat=None))


@pytest.mark.skipif(not REAL.is_dir(), reason=f"published HetRec data not found at {REAL}")
def test_published_data_set() -> None:
    """The published folder: 1,892 users, 17,632 artists, 92,834 pairs, 1,877 users evaluated."""
    ds = load_hetrec(REAL)
    assert len(ds.users) == 1892
    assert len(ds.catalog) == 17632
    assert sum(len(u) for u in ds.users) == 92834
    assert ds.summary.rows_read == ds.summary.rows_used == 92834
    assert ds.summary.duplicates_merged == 0
    assert sum(s.evaluated for s in split_users(ds.users, seed=0)) == 1877
    assert "tropicália" in {t for tags in ds.catalog.tags for t in tags}
    assert ds.catalog.text(ds.catalog.item_ids.index("289")).startswith("Britney Spears | pop")
