"""What a deployed run adds to the wire: the public catalog, sent to every device at the start, and its hash.

In a simulation every client parses the same data set file and so holds the catalog already. A deployed device
holds only its own user's history: it learns the catalog from the server. At the start of a deployed run
(`deployment-nodes` > 0) the server sends every node one `query` message whose config holds

    "catalog-json":   bytes   the catalog as `catalog.json` (exactly the bytes of the run directory's file)
    "catalog-sha256": str     the SHA-256 of those bytes (hex)

and the device, after checking the hash and parsing the catalog, stores the bytes as `catalog.json` in its state
directory and replies with a ConfigRecord {"catalog-sha256": hex}. Every later train and evaluate message of the
run carries "catalog-sha256" in its config too, and a device whose stored catalog hashes differently refuses it
(the adapter's item bias and the catalog table are indexed by catalog position, so a different catalog would
silently mean other items). Keys are only ever added, never renamed (the contract of `fedrec.shared.protocol`).

Where a deployed server gets the catalog (`data` of a run with `deployment-nodes` > 0, `load_public_catalog`):
a `catalog.json` file, a folder holding one (a run directory or a device state directory), or any data set spec
`fedrec simulate` reads, of which only the catalog is kept. The last reads the whole file, user rows included,
on the server: point `data` at a catalog.json to keep every user's data off the server.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from fedrec.shared.data.load import load_dataset
from fedrec.shared.data.types import Catalog, DataFormatError, LoadSummary
from fedrec.shared.protocol import CATALOG_SHA256, QUERY_CATALOG  # noqa: F401 - re-exported

#: File name of a stored catalog (as in a run directory, so `fedrec.shared.run_dir.read_catalog` reads it).
CATALOG_FILE = "catalog.json"


def catalog_bytes(catalog: Catalog) -> bytes:
    """The catalog as `catalog.json` bytes, identical to what `fedrec.shared.run_dir.write_catalog` writes."""
    doc = {"item_ids": catalog.item_ids, "names": catalog.names, "tags": catalog.tags}
    return json.dumps(doc, ensure_ascii=False).encode("utf-8")


def catalog_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def catalog_from_bytes(data: bytes, *, where: str) -> Catalog:
    """Parse and check catalog.json bytes; a `DataFormatError` naming `where` and the field when malformed."""
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataFormatError(where, f"not a catalog.json (not UTF-8 JSON: {e})") from None
    if not isinstance(doc, dict):
        raise DataFormatError(where, f"not a catalog.json: expected an object, found {type(doc).__name__}")
    for key in ("item_ids", "names", "tags"):
        if not isinstance(doc.get(key), list):
            raise DataFormatError(where, f"catalog field {key!r}: expected a list, found {doc.get(key)!r:.80}")
    ids, names, tags = doc["item_ids"], doc["names"], doc["tags"]
    if not ids:
        raise DataFormatError(where, "catalog field 'item_ids': the catalog is empty")
    for key, values in (("item_ids", ids), ("names", names)):
        bad = next((i for i, v in enumerate(values) if not isinstance(v, str)), None)
        if bad is not None:
            raise DataFormatError(where, f"catalog field {key!r}[{bad}]: expected a string, found {values[bad]!r}")
    bad = next((i for i, t in enumerate(tags) if not (isinstance(t, list) and all(isinstance(x, str) for x in t))),
               None)
    if bad is not None:
        raise DataFormatError(where, f"catalog field 'tags'[{bad}]: expected a list of strings, found {tags[bad]!r}")
    seen: set[str] = set()
    for k, item in enumerate(ids):
        if item in seen:
            raise DataFormatError(where, f"catalog field 'item_ids'[{k}]: item id {item!r} appears twice")
        seen.add(item)
    try:
        return Catalog(list(ids), list(names), [list(t) for t in tags])
    except ValueError as e:
        raise DataFormatError(where, str(e)) from None


def load_public_catalog(spec: str, item_metadata: str = "") -> tuple[Catalog, LoadSummary]:
    """The public catalog named by a deployed run's `data` (see the module docstring), with a load summary."""
    path = Path(spec)
    if path.is_dir() and (path / CATALOG_FILE).is_file():
        path = path / CATALOG_FILE
    if path.name == CATALOG_FILE and path.is_file():
        if item_metadata:
            raise ValueError(f"item-metadata {item_metadata!r} applies to a CSV data set, not to {path}")
        catalog = catalog_from_bytes(path.read_bytes(), where=str(path))
        summary = LoadSummary(source=str(path))
        summary.note(f"public catalog of {len(catalog)} items (a deployed run: no user data read on the server)")
        return catalog, summary
    ds = load_dataset(spec, metadata=item_metadata or None)
    summary = ds.summary
    summary.note(f"deployed run: only the catalog ({len(ds.catalog)} items) of this data set is used; its "
                 f"{len(ds.users)} users' rows were parsed but are not used")
    return ds.catalog, summary
