"""The entries of a privacy ledger: the guarantees, the kinds of entry each may hold, and `LedgerEntry` (one release
with its DpEvent, keyed by (run, round, release)). Apart from `ledger` so that module stays one job: the ledger's
order rules, files and accounting."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attr
from dp_accounting import dp_event

from fedrec.shared.privacy.errors import LedgerError
from fedrec.shared.privacy.events import event_from_json, event_to_json

USER_LEVEL = "user-level"
RECORD_LEVEL = "record-level"
GUARANTEES = (USER_LEVEL, RECORD_LEVEL)
USER_LEVEL_RELEASE = "user-level release"
LOCAL_DPSGD = "local DP-SGD"
LOCAL_RELEASE = "local release"  # a device's own Gaussian noise on a statistic it contributes (record-level)
KIND_OF_GUARANTEE = {USER_LEVEL: USER_LEVEL_RELEASE, RECORD_LEVEL: LOCAL_DPSGD}
#: every kind a ledger of each guarantee may hold (the first is its main kind, `PrivacyLedger.kind`)
KINDS_OF_GUARANTEE = {USER_LEVEL: (USER_LEVEL_RELEASE,), RECORD_LEVEL: (LOCAL_DPSGD, LOCAL_RELEASE)}
ALL_KINDS = tuple(k for kinds in KINDS_OF_GUARANTEE.values() for k in kinds)


@attr.s(frozen=True, slots=True, auto_attribs=True, eq=True)
class LedgerEntry:
    """One release: the `round` it happened in, its `kind`, the DpEvent that accounts for it, and metadata.

    `metadata` is for people and for the verifier's consistency checks (for example ``steps``, ``sample_rate``,
    ``clients_aggregated``); accountants never read it, only the event.
    """

    round: int
    kind: str
    event: dp_event.DpEvent
    metadata: Mapping[str, Any] = attr.Factory(dict)
    run: str = ""  # the run id ("" in ledgers without runs: a run's server ledger, a version-1 file)
    release: int = 0  # which release of (run, round): 0 for the first

    @property
    def key(self) -> tuple[str, int, int]:
        """(run, round, release): what identifies this release; a ledger holds each key once."""
        return self.run, self.round, self.release

    def to_json(self) -> dict[str, Any]:
        out = {"round": self.round, "kind": self.kind, "event": event_to_json(self.event),
               "metadata": dict(self.metadata)}
        if self.run:  # version-2 fields, written only by ledgers with runs (a version-1 ledger stays byte-identical)
            out.update(run=self.run, release=self.release)
        return out

    @classmethod
    def from_json(cls, obj: Any, *, where: str = "entry") -> LedgerEntry:
        if not isinstance(obj, Mapping):
            raise LedgerError(f"{where}: expected an object, found {obj!r}")
        missing = [k for k in ("round", "kind", "event") if k not in obj]
        if missing:
            raise LedgerError(f"{where}: missing field(s) {missing}")
        unknown = sorted(set(obj) - {"round", "kind", "event", "metadata", "run", "release"})
        if unknown:
            raise LedgerError(f"{where}: unknown field(s) {unknown}")
        rnd, kind, metadata = obj["round"], obj["kind"], obj.get("metadata", {})
        if not _is_count(rnd):
            raise LedgerError(f"{where}.round: expected an integer >= 0, found {rnd!r}")
        if kind not in ALL_KINDS:
            raise LedgerError(f"{where}.kind: expected one of {sorted(ALL_KINDS)}, found {kind!r}")
        if not isinstance(metadata, Mapping):
            raise LedgerError(f"{where}.metadata: expected an object, found {metadata!r}")
        run, release = obj.get("run", ""), obj.get("release", 0)
        if "run" in obj and (not isinstance(run, str) or not run):
            raise LedgerError(f"{where}.run: expected a non-empty run id, found {run!r}")
        if not _is_count(release) or ("release" in obj and "run" not in obj):
            raise LedgerError(f"{where}.release: expected an integer >= 0 beside a run id, found {release!r}")
        return cls(rnd, kind, event_from_json(obj["event"], where=f"{where}.event"), dict(metadata), run, release)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
