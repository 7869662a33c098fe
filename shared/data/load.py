"""One entry point for every data source: pick the format, parse, and (for one user's file) map onto a catalog.

Format detection, unless `fmt` names one of `FORMATS`: `synthetic[:key=value,...]`; a directory holding
`user_artists.dat` is HetRec; otherwise the file suffix (a trailing `.gz` ignored): `.jsonl`/`.json` ListenBrainz,
`.csv` generic CSV, and `.tsv` by its first line: a header naming the generic columns (`user`, `item`, ...) is the
generic format with tabs, six tab-separated fields without a header are Last.fm-1K, anything else is an error
that says which of the two was expected. Any other suffix needs `fmt` (`--data-format`).

`synthetic:users=auto,...` has no size of its own: the federation sizes it, one user per SuperNode
(`with_users`; `fedrec simulate` uses `AUTO_USERS`).

`load_history` reads one user's history, in any of these formats, onto the catalog a model was trained with:
an item matches by id, else by name (exact after case folding; among catalog items sharing that name, the
first). Rows whose item matches nothing are skipped with the reason `NOT_IN_CATALOG`, never silently.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from fedrec.shared.data._io import Parsed, read_lines
from fedrec.shared.data.csvfmt import is_generic_header, parse_csv
from fedrec.shared.data.hetrec import parse_hetrec
from fedrec.shared.data.lastfm1k import parse_lastfm1k
from fedrec.shared.data.listenbrainz import parse_listenbrainz
from fedrec.shared.data.synthetic import make_synthetic
from fedrec.shared.data.types import Catalog, DataFormatError, Dataset, LoadSummary, UserHistory

_PARSERS: dict[str, Callable[..., Parsed]] = {
    "hetrec": parse_hetrec,
    "lastfm1k": parse_lastfm1k,
    "listenbrainz": parse_listenbrainz,
    "csv": parse_csv,
}
FORMATS = ("synthetic", *_PARSERS)
_SUFFIXES = {".tsv": "lastfm1k", ".jsonl": "listenbrainz", ".json": "listenbrainz", ".csv": "csv"}
# `synthetic:` spec keys -> make_synthetic arguments (and the type to parse the value as)
_SYNTHETIC_KEYS: dict[str, tuple[str, type]] = {
    "users": ("num_users", int), "num_users": ("num_users", int),
    "items": ("num_items", int), "num_items": ("num_items", int),
    "seed": ("seed", int),
    "zipf_exponent": ("zipf_exponent", float), "median_history": ("median_history", float),
    "min_history": ("min_history", int), "max_history": ("max_history", int),
    "exploration": ("exploration", float),
}
#: the size `fedrec simulate` gives `synthetic:users=auto` (a `flwr run` federation gives one user per SuperNode)
AUTO_USERS = 200
NOT_IN_CATALOG = "not in the model's catalog"
OTHER_USERS = "rows of other users in the file"


def detect_format(spec: str) -> str:
    """The format name for `spec` (see the module docstring); a `DataFormatError` when none fits."""
    if spec == "synthetic" or spec.startswith("synthetic:"):
        return "synthetic"
    path = Path(spec)
    if path.is_dir():
        if (path / "user_artists.dat").exists():
            return "hetrec"
        raise DataFormatError(path, "a directory without user_artists.dat (not a HetRec Last.fm-2K folder)")
    if not path.exists():
        raise DataFormatError(path, "no such file or directory")
    suffix = Path(path.name.removesuffix(".gz")).suffix.lower()
    if suffix not in _SUFFIXES:
        raise DataFormatError(path, f"cannot tell the format from the suffix {suffix!r}: expected one of "
                                    f"{', '.join(_SUFFIXES)} or a HetRec folder; name the format with "
                                    f"--data-format (setting data.format): one of {', '.join(_PARSERS)}")
    if suffix == ".tsv":
        return _tsv_format(path)
    return _SUFFIXES[suffix]


def _tsv_format(path: Path) -> str:
    """A `.tsv` by its first line: a generic header is `csv` (tab-separated), six fields are Last.fm-1K."""
    line_no, first = next(read_lines(path))
    fields = first.split("\t")
    if is_generic_header(fields):
        return "csv"
    if len(fields) == 6:
        return "lastfm1k"
    raise DataFormatError(path, f"a .tsv file is either generic (a header row naming user, item[, timestamp]"
                                f"[, weight]) or Last.fm-1K (6 tab-separated columns, no header); the first line "
                                f"has {len(fields)} field(s) and no such header. Add the header row, or name the "
                                f"format with --data-format", line_no)


def is_auto_sized(spec: str) -> bool:
    """True for `synthetic:...users=auto...`: the federation decides how many users there are."""
    return detect_kind(spec) == "synthetic" and "users=auto" in spec.replace(" ", "").split(":", 1)[-1].split(",")


def with_users(spec: str, users: int) -> str:
    """`synthetic:users=auto,items=600` -> `synthetic:users=N,items=600` (other specs unchanged)."""
    if not is_auto_sized(spec):
        return spec
    head, _, options = spec.partition(":")
    parts = [f"users={users}" if p.replace(" ", "") == "users=auto" else p for p in options.split(",")]
    return f"{head}:{','.join(parts)}"


def detect_kind(spec: str) -> str:
    """"synthetic" for a synthetic spec, "file" otherwise (no file is opened)."""
    return "synthetic" if spec == "synthetic" or spec.startswith("synthetic:") else "file"


def _synthetic_kwargs(spec: str) -> dict[str, int | float]:
    """`synthetic:users=60,items=400,seed=0` -> make_synthetic keyword arguments."""
    _, _, options = spec.partition(":")
    kwargs: dict[str, int | float] = {}
    for part in filter(None, (p.strip() for p in options.split(","))):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in _SYNTHETIC_KEYS:
            raise ValueError(f"Unknown synthetic option {part!r} in {spec!r}; expected key=value with key in "
                             f"{', '.join(_SYNTHETIC_KEYS)}.")
        name, kind = _SYNTHETIC_KEYS[key]
        if name == "num_users" and value.strip() == "auto":
            raise ValueError(f"{spec!r}: users=auto is sized by the federation (one user per SuperNode); it is "
                             "resolved before the data is read (fedrec simulate: users=200). Give users=N to read "
                             "it directly.")
        try:
            kwargs[name] = kind(value.strip())
        except ValueError:
            raise ValueError(f"Synthetic option `{key}` must be {kind.__name__}. Found {value!r}.") from None
    return kwargs


def _parse(path: str, fmt: str, metadata: str | None, options: dict[str, object]) -> Parsed:
    if fmt not in _PARSERS:
        raise ValueError(f"Unknown format {fmt!r}; expected one of {', '.join(FORMATS)}.")
    if metadata is not None:
        if fmt != "csv":
            raise ValueError(f"`metadata` applies to the csv format only, not {fmt!r}.")
        options = {**options, "metadata": metadata}
    return _PARSERS[fmt](path, **options)


def load_dataset(spec: str, *, metadata: str | None = None, fmt: str | None = None, **options: object) -> Dataset:
    """Load a whole data set from `spec`: `synthetic[:k=v,...]`, a HetRec folder or a file.

    `metadata` is the item-metadata CSV for the csv format. `options` go to the format's parser:
    `strict=False` for Last.fm-1K (skip rows with a wrong column count), `user=` for ListenBrainz.
    """
    fmt = fmt or detect_format(spec)
    if fmt == "synthetic":
        if metadata is not None or options or not (spec == "synthetic" or spec.startswith("synthetic:")):
            raise ValueError(f"The synthetic data set takes its options in the spec (synthetic:users=60,...). "
                             f"Found spec {spec!r}.")
        return make_synthetic(**_synthetic_kwargs(spec))
    return _parse(spec, fmt, metadata, options).dataset()


def _catalog_lookup(catalog: Catalog) -> tuple[dict[str, int], dict[str, int]]:
    """(item id -> index, case-folded name -> first index with that name)."""
    by_id = {item_id: i for i, item_id in enumerate(catalog.item_ids)}
    by_name: dict[str, int] = {}
    for i, name in enumerate(catalog.names):
        by_name.setdefault(name.casefold(), i)
    return by_id, by_name


def read_user_history(path: str | Path, fmt: str | None = None, *, user: str | None = None) -> tuple[Parsed, str]:
    """Parse a history file completely (every line, any supported format) and pick its one user.

    What `load_history` reads before it needs a catalog, so a device can check its file before it joins a
    federation (`fedrec client`): a malformed line is a `DataFormatError` naming the file and the line, and a file
    holding several users needs `user=`.
    """
    path = str(path)
    fmt = fmt or detect_format(path)
    if fmt == "synthetic":
        raise ValueError("`load_history` reads a file; the synthetic data set has no file.")
    parsed = _parse(path, fmt, None, {"user": user} if fmt == "listenbrainz" else {})
    users = parsed.histories.user_ids
    if user is None:
        if len(users) != 1:
            shown = ", ".join(users[:5]) + (", ..." if len(users) > 5 else "")
            raise DataFormatError(path, f"holds {len(users)} users ({shown}); pass `user=` to choose one")
        user = users[0]
    elif user not in users:
        raise DataFormatError(path, f"no rows for user {user!r} (users in the file: {len(users)})")
    return parsed, user


def load_history(
    path: str | Path, catalog: Catalog, fmt: str | None = None, *, user: str | None = None
) -> tuple[UserHistory, LoadSummary]:
    """One user's history from `path` (any supported format), its items mapped onto `catalog`.

    A file holding several users needs `user=`; for ListenBrainz `user` also names listens without
    `user_name`. Items match by id, else by case-folded name; unmatched rows are skipped as `NOT_IN_CATALOG`.
    Two source items that map to one catalog item are merged like any repeated pair.
    """
    parsed, user = read_user_history(path, fmt, user=user)
    source = parsed.summary
    summary = LoadSummary(source=source.source, rows_read=source.rows_read, skipped=dict(source.skipped),
                          notes=list(source.notes))
    rows_per_item = parsed.histories.row_counts(user)
    other_rows = source.rows_used - sum(rows_per_item.values())
    if other_rows:
        summary.skip(OTHER_USERS, other_rows)

    by_id, by_name = _catalog_lookup(catalog)
    own = parsed.histories.history(user)
    cells: dict[int, list[float]] = {}  # catalog index -> [weight, timestamp]
    for k, src in enumerate(own.items.tolist()):
        target = by_id.get(parsed.catalog.item_ids[src])
        if target is None:
            target = by_name.get(parsed.catalog.names[src].casefold())
        rows = rows_per_item[src]
        if target is None:
            summary.skip(NOT_IN_CATALOG, rows)
            continue
        summary.rows_used += rows
        summary.duplicates_merged += rows - 1
        ts = np.nan if own.timestamps is None else float(own.timestamps[k])
        if target in cells:
            summary.duplicates_merged += 1
            cells[target][0] += float(own.weights[k])
            cells[target][1] = np.fmax(cells[target][1], ts)
        else:
            cells[target] = [float(own.weights[k]), ts]

    items = np.fromiter(cells.keys(), dtype=np.int64, count=len(cells))
    weights = np.array([c[0] for c in cells.values()], dtype=np.float64)
    timestamps = None if own.timestamps is None else np.array([c[1] for c in cells.values()], dtype=np.float64)
    return UserHistory(user, items, weights, timestamps), summary
