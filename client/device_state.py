"""A device's private state directory: what must survive a restart of the device, and nothing else.

Layout (every write is atomic: temp file, fsync, rename; a device killed mid-write keeps the previous file):

    device-ed25519.pem          the device's report-signing key (created on first use, mode 0600, never sent);
                                its fingerprint is a deployed device's identity (ledger subject, report device id)
    device-ed25519.pem.pub      its public key: give it to whoever verifies the device's reports
    record-ledger.json          the record-level PrivacyLedger of the device's lifetime: every DP-SGD round it
                                ever trained, in every run, each entry keyed by (run id, round, release)
    record-ledger.v1.json       the per-run ledger this directory held before the lifetime ledger (migration copy)
    privacy-report.json (.md)   the device's signed record-level epsilon report, rewritten after every round
    # a deployed device (node config `data-path`) also keeps
    catalog.json                the public catalog of the current run, as the server sent it (SHA-256 checked)
    config.json                 the run's public settings (RunConfig), as in a run directory
    adapter.safetensors         the last global adapter received (train or evaluate message)
    round-update.safetensors    the last round's outgoing update, with its round, run, ledger and metrics (0600)

With `catalog.json`, `config.json` and `adapter.safetensors` the directory reads like a run directory, so
`fedrec recommend --state-dir DIR` works offline.

Why a directory and not only Flower's `context.state`: `context.state` lives as long as the SuperNode process
(and the simulation), so a restarted device would start from epsilon 0.

Crash-safe rounds (a deployed device). A round is answered at most once per (run id, server round): before the
reply leaves, the device commits `round-update.safetensors`, one atomic file holding the outgoing update (the
adapter delta, after user-level clipping; with secure aggregation the delta before masking, so the same masked
round can be rebuilt), the reply's metrics, the hash of the global adapter it was computed from, the SecAgg+
session it answered, and the whole ledger *after* the round's charge. Only then is `record-ledger.json`
rewritten. So:

* killed before the commit: nothing was charged and nothing left the device; a re-delivered message trains anew;
* killed after the commit (before or after the ledger file, before the reply): `load_ledger` rolls the ledger
  forward from the commit, and a re-delivered message for the same (run, round) gets the stored update again,
  without training or charging a second time. The privacy spend is counted exactly once.

The record holds the device's unmasked delta, a function of its private history: it never leaves the state
directory and is written with mode 0600, like the signing key. Only the latest round is kept.

A lifetime, not a run. A device takes part in many runs over its life and its record-level budget
(`record_dp.epsilon_max`) caps the total, so the ledger is never reset: a new run appends to it (its entries
carry the new run id; a run once followed by another is closed), the budget check composes every entry, and the
signed report covers the lifetime and lists the runs. A state directory from before the lifetime ledger (entries
without a run id, one run per directory) is migrated on first load: its entries get the run id of its round
record (else of its report, else of its config), the original file is kept as `record-ledger.v1.json`, and the
migration is redone if a crash interrupts it.

In simulation the server proposes `<run-dir>/devices/partition-<id>`; a deployed device's own node config
(`state-dir`) always wins, so a server cannot point a device's ledger elsewhere. Simulated devices keep no round
record (a run of thousands of virtual devices would store one adapter-sized file each).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import attr
import numpy as np

from fedrec.client.node_config import NODE_STATE_DIR
from fedrec.shared.config import RunConfig
from fedrec.shared.edge.catalog import CATALOG_FILE
from fedrec.shared.io import atomic_write_bytes
from fedrec.shared.privacy import PrivacyLedger
from fedrec.shared.privacy.errors import LedgerError
from fedrec.shared.privacy.keys import Ed25519PrivateKey, fingerprint, load_or_create_private_key
from fedrec.shared.run_dir import ADAPTER, read_adapter, write_adapter, write_config

log = logging.getLogger("fedrec.client")

LEDGER = "record-ledger.json"
LEDGER_V1 = "record-ledger.v1.json"  # a per-run ledger as it was before its migration to the lifetime ledger
LEGACY_RUN = "unnamed run (before the lifetime ledger)"  # a migrated ledger whose directory names no run
KEY = "device-ed25519.pem"
REPORT = "privacy-report.json"
CONFIG = "config.json"
ROUND_RECORD = "round-update.safetensors"
ROUND_FORMAT = "fedrec-round-record-v1"


def with_run(ledger: PrivacyLedger, run: str) -> PrivacyLedger:
    """A copy of `ledger` whose entries without a run id belong to `run` (each keeps its release index)."""
    return PrivacyLedger(guarantee=ledger.guarantee, adjacency=ledger.adjacency, subject=ledger.subject,
                         entries=[e if e.run else attr.evolve(e, run=run) for e in ledger])


def resolve_state_dir(node_config: Mapping[str, Any], proposed_root: str | None, *, device: str) -> Path | None:
    """The device's state directory: its own `state-dir` setting, else `<proposed_root>/<device>`, else None."""
    own = str(node_config.get(NODE_STATE_DIR, "") or "")
    if own:
        return Path(own)
    if proposed_root:
        return Path(proposed_root) / device
    return None


def state_digest(state: Mapping[str, np.ndarray]) -> str:
    """SHA-256 over an adapter state (names, dtypes, shapes, bytes; sorted by name): which global it was."""
    h = hashlib.sha256()
    for k in sorted(state):
        v = np.ascontiguousarray(state[k])
        h.update(f"{k}|{v.dtype.str}|{v.shape}|".encode())
        h.update(v.tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class RoundRecord:
    """One answered round: what was (or was about to be) sent, and the ledger after the round's charge."""

    run_id: str
    server_round: int
    global_sha256: str  # the global adapter the update was computed from
    secagg_session: str  # hex of the SecAgg+ session the round answered ("" without secure aggregation)
    metrics: dict[str, Any]  # the reply's metrics
    update: dict[str, np.ndarray]  # the outgoing delta (before SecAgg+ masking)
    ledger: str = ""  # the record-level ledger JSON after this round's charge ("" without record-dp)


@dataclass(frozen=True)
class DeviceState:
    """Accessors of one device's state directory (created on first use)."""

    root: Path

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    @property
    def ledger_path(self) -> Path:
        return self.root / LEDGER

    @property
    def report_path(self) -> Path:
        return self.root / REPORT

    @property
    def round_path(self) -> Path:
        return self.root / ROUND_RECORD

    @property
    def catalog_path(self) -> Path:
        return self.root / CATALOG_FILE

    def signing_key(self) -> Ed25519PrivateKey:
        """The device's Ed25519 key (created once, with its public half at `device-ed25519.pem.pub`)."""
        return load_or_create_private_key(self.root / KEY)

    def key_fingerprint(self) -> str:
        """`SHA256:<hex>` of the device's public key: a deployed device's default identity."""
        return fingerprint(self.signing_key())

    # -- ledger ---------------------------------------------------------------------------------------------------

    def load_ledger(self, *, subject: str) -> PrivacyLedger:
        """The device's lifetime record-level ledger, or an empty one on its very first round.

        If the device was killed after committing a round record but before rewriting the ledger file, the
        ledger is rolled forward from the record (and saved), so the committed charge is never lost. A stored
        ledger of another subject or guarantee, or a record whose ledger does not extend the file's, is an error
        (`LedgerError`), never silently replaced. A ledger from before the lifetime ledger is migrated (module
        docstring).
        """
        ledger = PrivacyLedger.load_or_create(self.ledger_path, guarantee="record-level", subject=subject)
        record = self.load_round()
        committed = None if record is None or not record.ledger else \
            PrivacyLedger.loads(record.ledger, where=f"{self.round_path} (ledger)")
        if any(not e.run for e in [*ledger, *(committed or ())]):
            run = self._legacy_run(record)
            ledger = self._migrate(ledger, run)
            committed = None if committed is None else with_run(committed, run)
        if committed is None or len(committed) <= len(ledger):
            return ledger
        head = [e.to_json() for e in committed.entries[:len(ledger)]]
        if committed.subject != subject or committed.guarantee != ledger.guarantee \
                or head != [e.to_json() for e in ledger.entries]:
            raise LedgerError(f"{self.round_path}: its ledger ({len(committed)} entries, subject "
                              f"{committed.subject!r}) does not extend {self.ledger_path} ({len(ledger)} entries, "
                              f"subject {subject!r}); refusing to guess which privacy spend is true")
        self.save_ledger(committed)
        return committed

    def save_ledger(self, ledger: PrivacyLedger) -> None:
        ledger.save(self.ledger_path)

    def _legacy_run(self, record: RoundRecord | None) -> str:
        """The run a per-run (version-1) ledger belongs to: its round record's, else its report's, else its
        config's run name; a directory that names none gets a run id that says so."""
        if record is not None and record.run_id:
            return record.run_id
        for path, read in ((self.report_path, lambda d: d["run_id"]),
                           (self.root / CONFIG, lambda d: d["config"]["run"]["name"])):
            try:
                run = read(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if isinstance(run, str) and run:
                return run
        return LEGACY_RUN

    def _migrate(self, ledger: PrivacyLedger, run: str) -> PrivacyLedger:
        """Give a version-1 ledger file's entries `run`, keeping the original beside it (crash-safe: until the new
        file is in place the old one is read again and migrated again)."""
        if all(e.run for e in ledger):
            return ledger
        backup = self.root / LEDGER_V1
        if not backup.exists():
            atomic_write_bytes(backup, self.ledger_path.read_bytes())
        migrated = with_run(ledger, run)
        self.save_ledger(migrated)
        log.warning("%s: per-run ledger migrated to the device's lifetime ledger (%d entries, run %r; original "
                    "kept as %s)", self.ledger_path, len(migrated), run, backup.name)
        return migrated

    # -- round record (deployed devices) ------------------------------------------------------------------------

    def save_round(self, record: RoundRecord) -> None:
        """Commit a round (atomic, mode 0600): after this the round's charge and update survive any crash."""
        from safetensors.numpy import save

        meta = {"format": ROUND_FORMAT, "run_id": record.run_id, "server_round": str(record.server_round),
                "global_sha256": record.global_sha256, "secagg_session": record.secagg_session,
                "metrics": json.dumps(record.metrics, allow_nan=True), "ledger": record.ledger}
        data = save({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in record.update.items()}, metadata=meta)
        atomic_write_bytes(self.round_path, data, mode=0o600)

    def load_round(self) -> RoundRecord | None:
        """The last committed round, or None; a malformed record is an error naming the file and the field."""
        if not self.round_path.is_file():
            return None
        from safetensors.numpy import load

        data = self.round_path.read_bytes()  # read once: header and tensors from the same bytes
        try:
            size = int.from_bytes(data[:8], "little")  # safetensors: u64 header size, then the JSON header
            meta = json.loads(data[8:8 + size]).get("__metadata__") or {}
            update = dict(load(data))
        except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
            raise ValueError(f"{self.round_path}: not a readable round record: {e}") from None
        if meta.get("format") != ROUND_FORMAT:
            raise ValueError(f"{self.round_path}: format {meta.get('format')!r}, expected {ROUND_FORMAT!r}")
        missing = [k for k in ("run_id", "server_round", "global_sha256", "secagg_session", "metrics", "ledger")
                   if k not in meta]
        if missing:
            raise ValueError(f"{self.round_path}: round record lacks field(s) {missing}")
        try:
            return RoundRecord(run_id=meta["run_id"], server_round=int(meta["server_round"]),
                               global_sha256=meta["global_sha256"], secagg_session=meta["secagg_session"],
                               metrics=dict(json.loads(meta["metrics"])), update=update, ledger=meta["ledger"])
        except (ValueError, TypeError) as e:
            raise ValueError(f"{self.round_path}: bad round record field: {e}") from None

    # -- what offline recommendations need (deployed devices) ---------------------------------------------------

    def save_catalog(self, data: bytes) -> None:
        """Store the run's catalog exactly as received (its SHA-256 is what train/evaluate messages name)."""
        atomic_write_bytes(self.catalog_path, data)

    def load_catalog_bytes(self) -> bytes:
        if not self.catalog_path.is_file():
            raise FileNotFoundError(f"{self.catalog_path}: no catalog on this device yet (the server sends it at "
                                    "the start of a deployed run, before round 1)")
        return self.catalog_path.read_bytes()

    def save_config(self, cfg: RunConfig) -> None:
        """The run's public settings, as a run directory's config.json (`fedrec.shared.run_dir.read_config`)."""
        write_config(self.root, cfg)

    def save_adapter(self, state: dict[str, np.ndarray], *, server_round: int) -> None:
        """Keep the global adapter just received (after round `server_round`), so the device can recommend
        offline."""
        write_adapter(self.root, state, server_round)

    def load_adapter(self) -> dict[str, np.ndarray]:
        return read_adapter(self.root / ADAPTER)
