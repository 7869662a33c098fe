"""A run directory: everything a run leaves behind, written atomically, readable by `fedrec recommend`.

    config.json          the RunConfig, library versions, start time, population size
    catalog.json         the public item catalog the adapter was trained against
    rounds.json/.csv     one row per round: time, cost, loss, evaluation metrics
    clients.csv          one row per client message: round, node, phase, bytes down/up, seconds, status
    adapter.safetensors  the global adapter after the last completed round (float32)
    checkpoint/          SECRET while the run is unfinished: state.safetensors (mode 0600), what `fedrec simulate
                         --resume` continues from (fedrec.server.checkpoint); finished.json once the run is over.
                         Publish a run directory without it.
    summary.txt          the closing summary that was printed

Under a privacy setting (`RunConfig.private`) nothing per client is published: clients.json/.csv (who was asked,
who trained or failed when, their timings and bytes) and the simulated devices' state directories go to the
run's *private* directory, `<run.dir>/private/<run name>/` (`private_dir`, mode 0700), outside the run directory,
so the run directory can be published as it is. Poisson amplification assumes the sample stays secret; rounds.*
keep only per-round counts.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from fedrec.shared.config import RunConfig
from fedrec.shared.data.types import Catalog
from fedrec.shared.io import atomic_write_bytes, atomic_write_text, package_version

ADAPTER = "adapter.safetensors"
PRIVATE = "private"  # <run.dir>/private/<run name>: the server-private files of a run (never published)


def versions() -> dict[str, str]:
    return {pkg: package_version(pkg)
            for pkg in ("fedrec", "flwr", "torch", "transformers", "peft", "opacus", "dp-accounting", "numpy")}


def new_run_dir(cfg: RunConfig) -> Path:
    """A fresh, empty run directory. A named run never overwrites an earlier one; an unnamed run gets a
    timestamp (with a -2, -3, ... suffix if two runs start in the same second)."""
    parent = Path(cfg.run.dir)
    if cfg.run.name == PRIVATE:
        raise FileExistsError(f"run name {PRIVATE!r} is reserved: {parent / PRIVATE} holds the runs' private files")
    if cfg.run.name:
        path = parent / cfg.run.name
        if path.exists() and any(path.iterdir()):
            raise FileExistsError(f"run directory {path} already exists and is not empty; choose another --run-name")
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path, n = parent / stamp, 1
        while path.exists():
            n += 1
            path = parent / f"{stamp}-{n}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def private_dir(run: Path) -> Path:
    """The run's server-private directory, `<run.dir>/private/<run name>` (created 0700, its parent too):
    per-client rows and simulated devices' state under a privacy setting, outside the publishable run directory."""
    path = Path(run).parent / PRIVATE / Path(run).name
    for p in (path.parent, path):
        p.mkdir(mode=0o700, exist_ok=True)
        os.chmod(p, 0o700)
    return path


def clients_dir(run: Path, cfg: RunConfig) -> Path:
    """Where clients.json/.csv of `run` go: the private directory under a privacy setting, else the run's own."""
    return private_dir(run) if cfg.private else Path(run)


def write_config(run: Path, cfg: RunConfig, **extra: Any) -> None:
    doc = {"config": cfg.to_nested(), "versions": versions(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    doc.update(extra)
    atomic_write_text(run / "config.json", json.dumps(doc, indent=2))


def read_config(run: Path) -> RunConfig:
    path = run / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not a fedrec run directory (no config.json)")
    return RunConfig.from_mapping(json.loads(path.read_text())["config"], source=str(path))


def write_catalog(run: Path, catalog: Catalog) -> None:
    doc = {"item_ids": catalog.item_ids, "names": catalog.names, "tags": catalog.tags}
    atomic_write_text(run / "catalog.json", json.dumps(doc, ensure_ascii=False))


def read_catalog(run: Path) -> Catalog:
    doc = json.loads((run / "catalog.json").read_text(encoding="utf-8"))
    return Catalog(doc["item_ids"], doc["names"], doc["tags"])


def write_adapter(run: Path, state: dict[str, np.ndarray], server_round: int) -> None:
    from safetensors.numpy import save

    data = save({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in state.items()},
                metadata={"server_round": str(server_round), "format": "fedrec-adapter-v1"})
    atomic_write_bytes(run / ADAPTER, data)


def read_adapter(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    if not path.is_file():
        raise FileNotFoundError(f"{path}: no adapter (has the run completed a round?)")
    return dict(load_file(str(path)))


RELEASED = "released.safetensors"


def write_released(run: Path, released: dict[str, np.ndarray]) -> None:
    """The released statistics (public: post-processed noisy sums, `fedrec.shared.hybrid`) next to the adapter."""
    from safetensors.numpy import save

    data = save({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in released.items()},
                metadata={"format": "fedrec-released-v1"})
    atomic_write_bytes(run / RELEASED, data)


def read_released(run: Path) -> dict[str, np.ndarray]:
    """The run's released statistics, {} if it released none (a LoRA-only run, or one from before releases)."""
    from safetensors.numpy import load_file

    path = Path(run) / RELEASED
    return dict(load_file(str(path))) if path.is_file() else {}


def write_rows(run: Path, stem: str, rows: list[dict[str, Any]]) -> None:
    """rows -> `stem`.json and `stem`.csv (columns: the union of keys, in first-seen order)."""
    atomic_write_text(run / f"{stem}.json", json.dumps(rows, indent=1))
    cols: list[str] = []
    for r in rows:
        cols.extend(k for k in r if k not in cols)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols)
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(run / f"{stem}.csv", buf.getvalue())
