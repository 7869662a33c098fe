"""The public catalog of a deployed run: where the server reads it from, and how a device checks what it got."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedrec.shared.data.synthetic import make_synthetic
from fedrec.shared.data.types import DataFormatError
from fedrec.shared.edge.catalog import catalog_bytes, catalog_from_bytes, catalog_sha256, load_public_catalog
from fedrec.shared.run_dir import write_catalog


def test_catalog_bytes_are_a_run_directorys_catalog_json(tmp_path: Path) -> None:
    """What travels is byte for byte the run's catalog.json, so its SHA-256 can be checked with sha256sum."""
    catalog = make_synthetic(num_users=2, num_items=12, seed=0).catalog
    write_catalog(tmp_path, catalog)
    data = (tmp_path / "catalog.json").read_bytes()
    assert catalog_bytes(catalog) == data
    assert catalog_from_bytes(data, where="x") == catalog
    assert len(catalog_sha256(data)) == 64


@pytest.mark.parametrize("spec", ["file", "folder", "dataset"])
def test_public_catalog_sources(tmp_path: Path, spec: str) -> None:
    """A catalog.json, a folder holding one (a run dir), or a data set spec whose catalog alone is kept."""
    ds = make_synthetic(num_users=3, num_items=15, seed=1)
    write_catalog(tmp_path, ds.catalog)
    source = {"file": str(tmp_path / "catalog.json"), "folder": str(tmp_path),
              "dataset": "synthetic:users=3,items=15,seed=1"}[spec]
    catalog, summary = load_public_catalog(source)
    assert catalog == ds.catalog
    assert any("catalog" in note for note in summary.notes)


@pytest.mark.parametrize(("doc", "message"), [
    ({"item_ids": ["a", "a"], "names": ["A", "B"], "tags": [[], []]}, "'item_ids'\\[1\\]: item id 'a' appears twice"),
    ({"item_ids": ["a"], "names": ["A"]}, "catalog field 'tags'"),
    ({"item_ids": ["a", "b"], "names": ["A"], "tags": [[], []]}, "differ in length"),
    ({"item_ids": [], "names": [], "tags": []}, "empty"),
    ({"item_ids": ["a"], "names": ["A"], "tags": [["x", 3]]}, "'tags'\\[0\\]"),
])
def test_a_malformed_catalog_is_refused_naming_the_field(doc: dict, message: str) -> None:
    with pytest.raises(DataFormatError, match=f"^catalog query: .*{message}"):
        catalog_from_bytes(json.dumps(doc).encode(), where="catalog query")
