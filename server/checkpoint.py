"""A running federation's checkpoint: what `fedrec simulate --resume RUN_DIR` continues from.

One file, `<run>/checkpoint/state.safetensors`, rewritten atomically (temp file, fsync, rename) at the start of
the run (round 0) and after every round, holding everything the rest of the run depends on:

- the round number and the global adapter (and the initial adapter when an empirical audit needs it at the end);
- the user-level privacy ledger and the secret PCG64 states of the DP sampler and noise generators
  (`UserLevelDP.secret_state`), so the resumed run samples the same users and draws the noise an uninterrupted
  run would have drawn;
- the round and client rows so far, the record-level epsilons devices reported (by partition), the audit's
  secret seed and the sum of the released updates its canary clients are scored on;
- a SHA-256 over all of it, so a damaged file is refused by name rather than half-used.

Order within a round: **checkpoint first, then the public outputs** (ledger-user.json, adapter.safetensors,
rounds.*, clients.csv). A server killed after publishing a round but before checkpointing it would, on resume,
redo that round and release it a second time with fresh noise while the ledger counts it once: a privacy bug.
With the checkpoint first, a kill between the two only delays publication; the resumed run re-derives every
public file from the checkpoint before it goes on. A kill before the checkpoint loses the round's work but
released nothing (devices that trained keep their own record-level charges: over-counting, never under-).

Secrets: the generator states determine the secret sample and the DP noise (PCG64 can be stepped backwards, so
they reveal past noise too), and the audit seed is the audit's ground truth. The file is created mode 0600 in a
0700 folder, never enters a report, and a run directory must be published without `checkpoint/`. When a run
finishes, the state file is deleted and only `checkpoint/finished.json` (no secrets) remains, which is also what
makes a finished run refuse to resume.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from fedrec.shared.config import ConfigError, RunConfig
from fedrec.shared.io import atomic_write_bytes, atomic_write_text
from fedrec.shared.privacy.ledger import PrivacyLedger
from fedrec.shared.run_dir import read_config, write_adapter, write_released, write_rows

State = dict[str, np.ndarray]

CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "state.safetensors"
FINISHED_FILE = "finished.json"
FORMAT = "fedrec-checkpoint-v1"


class CheckpointError(RuntimeError):
    """A run cannot be resumed: no or damaged checkpoint, finished run, conflicting settings (names the file)."""


@dataclass
class Checkpoint:
    """The state of a run after `round` completed rounds (0: set up, nothing trained yet)."""

    round: int
    global_state: State
    adapter_round: int  # round of the last released adapter (0: none yet)
    succeeded: int  # rounds that released an update
    rounds: list[dict[str, Any]]
    client_rows: list[dict[str, Any]]
    record_epsilons: dict[int, float]  # node identity (partition; node id in a deployment) -> epsilon
    identity: str  # "partition" or "node-id": what the keys above are
    user_dp: dict[str, Any] | None = None  # UserLevelDP.secret_state()
    audit_seed: int | None = None
    audit_seconds: float = 0.0
    initial_state: State | None = None  # the adapter before round 1 (the audit compares against it)
    released: State = field(default_factory=dict)  # the statistics released so far (public; server.releases)
    release_rows: list[dict[str, Any]] = field(default_factory=list)  # the release phase's rows
    optimizer: State = field(default_factory=dict)  # the server optimizer's state (ServerOptimizer.state)
    audit_released: State | None = None  # the sum of the released updates (the audit's canary-client scores)


def state_path(run: Path) -> Path:
    return Path(run) / CHECKPOINT_DIR / STATE_FILE


def finished_path(run: Path) -> Path:
    return Path(run) / CHECKPOINT_DIR / FINISHED_FILE


def _digest(meta: bytes, tensors: Mapping[str, np.ndarray]) -> str:
    h = hashlib.sha256(meta)
    for key in sorted(tensors):
        h.update(key.encode("utf-8"))
        h.update(np.ascontiguousarray(tensors[key]).tobytes())
    return h.hexdigest()


def save_checkpoint(run: Path, ckpt: Checkpoint) -> Path:
    """Write the checkpoint atomically (mode 0600): a reader sees the previous one or this one, never a mix."""
    from safetensors.numpy import save

    tensors = {f"global/{k}": np.ascontiguousarray(v, dtype=np.float32) for k, v in ckpt.global_state.items()}
    if ckpt.initial_state is not None:
        tensors.update({f"initial/{k}": np.ascontiguousarray(v, dtype=np.float32)
                        for k, v in ckpt.initial_state.items()})
    tensors.update({f"released/{k}": np.ascontiguousarray(v, dtype=np.float32) for k, v in ckpt.released.items()})
    tensors.update({f"optimizer/{k}": np.ascontiguousarray(v, dtype=np.float32) for k, v in ckpt.optimizer.items()})
    if ckpt.audit_released is not None:
        tensors.update({f"audit-released/{k}": np.ascontiguousarray(v, dtype=np.float64)
                        for k, v in ckpt.audit_released.items()})
    doc = {f.name: getattr(ckpt, f.name) for f in fields(ckpt)
           if f.name not in ("global_state", "initial_state", "released", "optimizer", "audit_released")}
    doc["record_epsilons"] = {str(k): float(v) for k, v in ckpt.record_epsilons.items()}
    doc["has_initial_state"] = ckpt.initial_state is not None
    doc["has_audit_released"] = ckpt.audit_released is not None
    meta = json.dumps(doc, sort_keys=True)
    folder = state_path(run).parent
    folder.mkdir(mode=0o700, exist_ok=True)
    os.chmod(folder, 0o700)
    data = save(tensors, metadata={"format": FORMAT, "state": meta,
                                   "sha256": _digest(meta.encode("utf-8"), tensors)})
    return atomic_write_bytes(state_path(run), data, mode=0o600)


def load_checkpoint(run: Path) -> Checkpoint:
    """The run's checkpoint; CheckpointError naming the file if it is missing, damaged or of the wrong format."""
    from safetensors import safe_open

    path = state_path(run)
    if finished_path(run).is_file():
        raise CheckpointError(f"{Path(run)} finished (see {finished_path(run)}); there is nothing to resume")
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint (the run was made before checkpoints existed, or was stopped "
                              "before its setup completed); start a new run")
    try:
        with safe_open(str(path), framework="numpy") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    except Exception as e:  # noqa: BLE001 - any parse failure means a damaged file
        raise CheckpointError(f"{path}: damaged checkpoint, cannot be read ({type(e).__name__}: {e})") from None
    if header.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a {FORMAT} file (format {header.get('format')!r})")
    meta = str(header.get("state", ""))
    if _digest(meta.encode("utf-8"), tensors) != header.get("sha256"):
        raise CheckpointError(f"{path}: damaged checkpoint (SHA-256 mismatch)")
    try:
        doc = json.loads(meta)
        has_initial = bool(doc.pop("has_initial_state"))
        has_released = bool(doc.pop("has_audit_released", False))  # absent from checkpoints made before it
        doc["record_epsilons"] = {int(k): float(v) for k, v in doc["record_epsilons"].items()}

        def part(prefix: str) -> State:
            return {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}

        ckpt = Checkpoint(global_state=part("global/"), initial_state=part("initial/") if has_initial else None,
                          released=part("released/"), optimizer=part("optimizer/"),
                          audit_released=part("audit-released/") if has_released else None, **doc)
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: damaged checkpoint ({type(e).__name__}: {e})") from None
    return ckpt


def publish(run: Path, ledger: PrivacyLedger | None, rounds: list[dict[str, Any]],
            client_rows: list[dict[str, Any]], *, adapter: tuple[State, int] | None, clients: Path,
            released: State | None = None, release_rows: list[dict[str, Any]] | None = None) -> None:
    """The run's outputs as of the last checkpoint: the user-level ledger, the adapter (if a round released one),
    the released statistics, the round and release rows, and the client rows into `clients` (the run's private
    directory under a privacy setting: `fedrec.shared.run_dir.clients_dir`). Called only after
    `save_checkpoint`, never before."""
    if ledger is not None and len(ledger):
        ledger.save(run / "ledger-user.json")
    if adapter is not None:
        write_adapter(run, *adapter)
    if released:
        write_released(run, released)
    if release_rows:
        write_rows(run, "releases", release_rows)
    if rounds:
        write_rows(run, "rounds", rounds)
        write_rows(clients, "clients", client_rows)


def mark_finished(run: Path, *, rounds: int) -> None:
    """The run is over: write the marker, then delete the secrets (nothing can be resumed from here on)."""
    atomic_write_text(finished_path(run), json.dumps({"finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                                      "rounds": rounds}) + "\n")
    state_path(run).unlink(missing_ok=True)


def note_resumed(run: Path, *, from_round: int) -> None:
    """Add a `resumed` entry to config.json (when, after which round): the run's history stays visible."""
    path = Path(run) / "config.json"
    doc = json.loads(path.read_text())
    doc.setdefault("resumed", []).append({"at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "after_round": from_round})
    atomic_write_text(path, json.dumps(doc, indent=2))


def resumable_config(run: Path, *, overrides: Mapping[str, Any] | None = None,
                     given: RunConfig | None = None) -> RunConfig:
    """The RunConfig of a run that can be resumed, after checking everything a resume needs.

    Refuses (CheckpointError, naming the file or the settings) a missing or finished run, a missing or damaged
    checkpoint, command-line `overrides` (kebab- or snake-case) that differ from the run's settings, or a `given`
    RunConfig that is not the run's.
    """
    run = Path(run)
    if not (run / "config.json").is_file():
        raise CheckpointError(f"{run / 'config.json'}: not a fedrec run directory (no config.json)")
    try:
        stored = read_config(run)
    except (ConfigError, ValueError, KeyError) as e:
        raise CheckpointError(f"{run / 'config.json'}: cannot read the run's settings: {e}") from None
    load_checkpoint(run)
    conflicts: list[str] = []
    if overrides:
        try:
            merged = stored.updated(overrides, source="command line")
        except ConfigError as e:
            raise CheckpointError(f"--resume {run}: {e}") from None
        conflicts += _differences(stored, merged)
    if given is not None:
        conflicts += _differences(stored, given)
    if conflicts:
        raise CheckpointError(f"--resume {run}: a resumed run keeps its settings ({run / 'config.json'}); these "
                              f"differ: {'; '.join(conflicts)}")
    return stored


def _differences(stored: RunConfig, other: RunConfig) -> list[str]:
    mine, theirs = stored.to_flat(), other.to_flat()
    return [f"{k}: run has {mine[k]!r}, given {theirs[k]!r}" for k in mine if mine[k] != theirs[k]]
