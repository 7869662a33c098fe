"""ListenBrainz listens loader: JSON Lines and JSON array."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from fedrec.shared.data.listenbrainz import SKIP_NO_ARTIST, load_listenbrainz
from fedrec.shared.data.types import DataFormatError

MBID_MAPPED = "a74b1b7f-71a5-4011-9441-d0b5e4122711"
MBID_SUBMITTED = "0383dadf-2a4e-4d10-a46a-e9e041da8eb3"


def listen(ts: int, artist: str, *, mapped: str | None = None, submitted: str | None = None,
           user: str | None = None) -> dict:
    meta: dict = {"artist_name": artist, "track_name": "t"}
    if submitted:
        meta["additional_info"] = {"artist_mbids": [submitted]}
    if mapped:
        meta["mbid_mapping"] = {"artist_mbids": [mapped]}
    out: dict = {"listened_at": ts, "track_metadata": meta}
    if user:
        out["user_name"] = user
    return out


LISTENS = [
    listen(1_600_000_300, "Radiohead", mapped=MBID_MAPPED, submitted=MBID_SUBMITTED),
    listen(1_600_000_200, "Queen", submitted=MBID_SUBMITTED),
    listen(1_600_000_100, "Radiohead", mapped=MBID_MAPPED),
    listen(1_600_000_400, "Some Busker"),
    listen(1_600_000_050, ""),  # no artist at all: skipped, counted
]


def write_jsonl(path: Path, records: list, extra_lines: list[str] = ()) -> Path:
    path.write_text("\n".join([json.dumps(r) for r in records] + list(extra_lines)) + "\n", encoding="utf-8")
    return path


def test_jsonl_happy_path(tmp_path: Path) -> None:
    """MBID from mbid_mapping first, then additional_info, else the name; user from the file stem."""
    ds = load_listenbrainz(write_jsonl(tmp_path / "alice.jsonl", LISTENS))
    assert ds.catalog.item_ids == [MBID_MAPPED, MBID_SUBMITTED, "Some Busker"]
    assert ds.catalog.names == ["Radiohead", "Queen", "Some Busker"]
    (alice,) = ds.users
    assert alice.user_id == "alice"
    np.testing.assert_array_equal(alice.items, [0, 1, 2])
    np.testing.assert_array_equal(alice.weights, [2.0, 1.0, 1.0])
    np.testing.assert_array_equal(alice.timestamps, [1_600_000_300, 1_600_000_200, 1_600_000_400])
    s = ds.summary
    assert (s.rows_read, s.rows_used, s.duplicates_merged, s.skipped) == (5, 4, 1, {SKIP_NO_ARTIST: 1})


def test_user_name_field_and_user_argument(tmp_path: Path) -> None:
    """`user_name` wins; listens without it go to the `user` argument."""
    records = [listen(1, "A", user="bob"), listen(2, "B"), listen(3, "A", user="carol")]
    ds = load_listenbrainz(write_jsonl(tmp_path / "x.jsonl", records), user="dave")
    assert [u.user_id for u in ds.users] == ["bob", "dave", "carol"]


def test_json_array(tmp_path: Path) -> None:
    """A JSON array export reads the same as JSON Lines."""
    path = tmp_path / "alice.json"
    path.write_text(json.dumps(LISTENS, indent=2), encoding="utf-8")
    a = load_listenbrainz(path)
    b = load_listenbrainz(write_jsonl(tmp_path / "alice.jsonl", LISTENS))
    assert a.catalog == b.catalog
    np.testing.assert_array_equal(a.users[0].weights, b.users[0].weights)
    assert a.summary.rows_read == 5


def test_json_array_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    path.write_text('[\n {"listened_at": 1, "track_metadata": {"artist_name": "A"}},\n {"listened_at": 2}\n]\n')
    with pytest.raises(DataFormatError, match=re.escape("a.json:3: listen has no `track_metadata`")):
        load_listenbrainz(path)
    path.write_text('[\n {"listened_at": 1, "track_metadata": {"artist_name": "A"}}\n {"listened_at": 2}\n]\n')
    with pytest.raises(DataFormatError, match=re.escape("a.json:3: expected `,` or `]`")):
        load_listenbrainz(path)
    path.write_text("[\n]\n")
    with pytest.raises(DataFormatError, match=re.escape("a.json: no listens")):
        load_listenbrainz(path)


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ('{"listened_at": 1, "track_metadata": ', "bad JSON"),
        ('{"track_metadata": {"artist_name": "A"}}', "listen has no `listened_at`"),
        ('{"listened_at": "soon", "track_metadata": {"artist_name": "A"}}', "`listened_at` must be unix seconds"),
        ('{"listened_at": true, "track_metadata": {"artist_name": "A"}}', "`listened_at` must be unix seconds"),
        ('{"listened_at": 1, "track_metadata": "A"}', "`track_metadata` must be an object"),
        ('[1, 2]', "expected a listen object"),
        ('{"listened_at": 1, "track_metadata": {"artist_name": "A", "mbid_mapping": {"artist_mbids": "x"}}}',
         "`artist_mbids` must be a list of strings"),
    ],
)
def test_malformed_jsonl(tmp_path: Path, extra: str, match: str) -> None:
    path = write_jsonl(tmp_path / "alice.jsonl", LISTENS[:2], ["", extra])  # a blank line still counts
    with pytest.raises(DataFormatError, match=re.escape("alice.jsonl:4: ") + ".*" + re.escape(match)):
        load_listenbrainz(path)


def test_empty_and_undecodable(tmp_path: Path) -> None:
    path = tmp_path / "alice.jsonl"
    path.write_bytes(b"")
    with pytest.raises(DataFormatError, match=re.escape("alice.jsonl: empty file")):
        load_listenbrainz(path)
    path.write_bytes(json.dumps(LISTENS[0]).encode() + b'\n{"listened_at": 1, "track_metadata": '
                     b'{"artist_name": "Bj\xf6rk"}}\n')
    with pytest.raises(DataFormatError, match=re.escape("alice.jsonl:2: bytes not valid UTF-8")):
        load_listenbrainz(path)
