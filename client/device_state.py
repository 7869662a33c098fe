"""A device's private state directory: what must survive a restart of the device, and nothing else.

Layout (every write is atomic: temp file, fsync, rename; a device killed mid-write keeps the previous file):

    device-ed25519.pem          the device's report-signing key (created on first use, mode 0600, never sent)
    device-ed25519.pem.pub      its public key: give it to whoever verifies the device's reports
    record-ledger.json          the record-level PrivacyLedger: every DP-SGD round this device ever trained
    adapter.safetensors         the last global adapter received (for offline recommendations)
    privacy-report.json (.md)   the device's signed record-level epsilon report, rewritten after every round

Why a directory and not only Flower's `context.state`: `context.state` lives as long as the SuperNode process
(and the simulation), so a restarted device would start from epsilon 0. The ledger is written *before* the
round's update is sent (the training step appends to it, the handler saves, then replies): a device killed after
training but before saving released nothing, and one killed after saving but before replying is charged for a
release that never happened, which over-counts (safe) and never under-counts.

In simulation the server proposes `<run-dir>/devices/partition-<id>`; a deployed device's own node config
(`state-dir`) always wins, so a server cannot point a device's ledger elsewhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedrec.shared.privacy import PrivacyLedger
from fedrec.shared.privacy.keys import Ed25519PrivateKey, load_or_create_private_key
from fedrec.shared.run_dir import ADAPTER, read_adapter, write_adapter

#: node_config key of a deployed device's state directory (set by the device owner, never by the server).
NODE_STATE_DIR = "state-dir"
#: message-config key with which the server proposes a root for simulated devices' state directories.
PROPOSED_STATE_ROOT = "device-state-root"

LEDGER = "record-ledger.json"
KEY = "device-ed25519.pem"
REPORT = "privacy-report.json"


def resolve_state_dir(node_config: Mapping[str, Any], proposed_root: str | None, *, device: str) -> Path | None:
    """The device's state directory: its own `state-dir` setting, else `<proposed_root>/<device>`, else None."""
    own = str(node_config.get(NODE_STATE_DIR, "") or "")
    if own:
        return Path(own)
    if proposed_root:
        return Path(proposed_root) / device
    return None


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

    def signing_key(self) -> Ed25519PrivateKey:
        """The device's Ed25519 key (created once, with its public half at `device-ed25519.pem.pub`)."""
        return load_or_create_private_key(self.root / KEY)

    def load_ledger(self, *, subject: str) -> PrivacyLedger:
        """The device's record-level ledger, or an empty one on its very first round.

        A stored ledger of another subject or guarantee is an error (`LedgerError`), never silently replaced.
        """
        return PrivacyLedger.load_or_create(self.ledger_path, guarantee="record-level", subject=subject)

    def save_ledger(self, ledger: PrivacyLedger) -> None:
        ledger.save(self.ledger_path)

    def save_adapter(self, state: dict[str, np.ndarray], *, server_round: int) -> None:
        """Keep the global adapter just received, so the device can recommend offline."""
        write_adapter(self.root, state, server_round)

    def load_adapter(self) -> dict[str, np.ndarray]:
        return read_adapter(self.root / ADAPTER)
