"""The privacy ledger: the list of `dp_accounting` DpEvents, one per release, from which every epsilon is computed.

Epsilon is never stored as the source of truth. A ledger records *what was released and how* (one DpEvent per
release, plus human-readable metadata), and epsilon is always computed by composing the ledger with an
accountant. That is what lets an auditor recompute it with a different accountant, and what makes resuming
safe: a resumed run loads the same ledger and keeps appending, so the accountant always sees the whole history.

A ledger holds one guarantee only, because composing record-level and user-level events into one epsilon would
mean nothing:

- ``"user-level"`` ledgers (the server's DP-FedAvg) hold ``"user-level release"`` entries, one per round whose
  noisy aggregate was released; the unit is a user (all of one device's data).
- ``"record-level"`` ledgers (one device's Opacus DP-SGD) hold ``"local DP-SGD"`` entries, one per round the
  device trained in; the unit is one training record of that device.

Serialization and compatibility contract
----------------------------------------
A ledger file is one JSON object::

    {"format": "fedrec.privacy-ledger", "version": 1, "event_codec": 1,
     "guarantee": "user-level", "adjacency": "add_or_remove_one", "subject": "run-7",
     "entries": [{"round": 1, "kind": "user-level release", "event": {...}, "metadata": {...}}, ...]}

Events are encoded with the JSON codec of `fedrec.shared.privacy.events` (its docstring has the format and an
example); ``event_codec`` is that codec's version.

To make sure a ledger written today is read with the same meaning by every later version (the rules of
`dp_accounting/dp_event.py`, applied to this file format):

* Fields are never removed from ledgers, entries or events, and their meaning never changes. A reader that
  sees a ``version`` newer than it knows refuses the file rather than guess.
* New fields may only be added if they are optional, so that old ledgers without them stay valid. Adding one
  bumps ``version``; readers accept every version up to theirs.
* The meaning of an entry ``kind`` and of a metadata key never changes. A new mechanism gets a new DpEvent class
  (in `dp_accounting`, or in a fedrec module added to the decoder's allow-list with a new ``event_codec``),
  never a new interpretation of an existing one.
* Only classes defined in `dp_accounting.dp_event` are decoded, by name from an allow-list. The file never
  makes the reader import a module (unlike `DpEvent.from_named_tuple`, which imports ``module_name``), so a
  hostile report or ledger cannot run code in the auditor's process.
* Round trips are exact: floats are written with Python's shortest round-tripping repr, integers stay integers,
  and an event is canonicalised (decoded from its own encoding) before it enters a ledger, so the in-memory
  ledger is equal to the one read back.

Version 2: entries keyed by (run, round, release)
------------------------------------------------
A device trains in many runs over its life and its record-level budget is a lifetime budget, so one ledger holds
the releases of every run. Version 2 adds two optional entry fields: ``run`` (the run id, a non-empty string)
and ``release`` (an integer >= 0: which release of that run's round, 0 for the first). An entry is identified by
its key (run, round, release), and the ledger refuses a second entry with a key it already holds: a release is
charged once, whatever re-delivers it. Order: within a run, keys strictly increase; runs are contiguous, so a run
once followed by another is closed. A ledger whose entries carry no run id is written as version 1, exactly as
before (its entries' release is their position within their round); a version-1 file never holds the new fields.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import attr
import dp_accounting
from dp_accounting import dp_event

from fedrec.shared.io import atomic_write_bytes
from fedrec.shared.privacy.distributed_entries import entry_metadata
from fedrec.shared.privacy.errors import LedgerError
from fedrec.shared.privacy.events import (
    ADJACENCY,
    EVENT_CODEC_VERSION,
    canonical_event,
    codec_version,
    dpfedavg_event,
    dpsgd_event,
)
from fedrec.shared.privacy.ledger_entry import (  # re-exported: the ledger's public names
    ALL_KINDS as ALL_KINDS,
)
from fedrec.shared.privacy.ledger_entry import (
    GUARANTEES as GUARANTEES,
)
from fedrec.shared.privacy.ledger_entry import (
    KIND_OF_GUARANTEE as KIND_OF_GUARANTEE,
)
from fedrec.shared.privacy.ledger_entry import (
    KINDS_OF_GUARANTEE as KINDS_OF_GUARANTEE,
)
from fedrec.shared.privacy.ledger_entry import (
    LOCAL_DPSGD as LOCAL_DPSGD,
)
from fedrec.shared.privacy.ledger_entry import (
    LOCAL_RELEASE as LOCAL_RELEASE,
)
from fedrec.shared.privacy.ledger_entry import (
    RECORD_LEVEL as RECORD_LEVEL,
)
from fedrec.shared.privacy.ledger_entry import (
    USER_LEVEL as USER_LEVEL,
)
from fedrec.shared.privacy.ledger_entry import (
    USER_LEVEL_RELEASE as USER_LEVEL_RELEASE,
)
from fedrec.shared.privacy.ledger_entry import (
    LedgerEntry as LedgerEntry,
)

LEDGER_FORMAT = "fedrec.privacy-ledger"
LEDGER_VERSION = 2
RUN_FIELDS_SINCE = 2  # the version that added the optional entry fields `run` and `release`



class PrivacyLedger:
    """The ordered releases of one guarantee (user-level for a run, record-level for a device).

    Append with `record_user_level_release` / `record_local_dpsgd` (or `append` for any other event), persist
    with `save` after every append, and resume with `load_or_create`. Rounds never go back: an entry for a round
    earlier than the last one is refused, which catches resuming from a stale ledger. A device's lifetime ledger
    gives each entry its run id (`run=`): then the key (run, round, release) is unique, keys increase within a
    run, and a run once followed by another is closed (`check_next`).
    """

    def __init__(self, *, guarantee: str, adjacency: str = "add_or_remove_one", subject: str = "",
                 entries: Iterable[LedgerEntry] = ()) -> None:
        if guarantee not in GUARANTEES:
            raise LedgerError(f"ledger guarantee: expected one of {list(GUARANTEES)}, found {guarantee!r}")
        if adjacency not in ADJACENCY:
            raise LedgerError(f"ledger adjacency: expected one of {sorted(ADJACENCY)}, found {adjacency!r}")
        if not isinstance(subject, str):
            raise LedgerError(f"ledger subject: expected a string, found {subject!r}")
        self._guarantee = guarantee
        self._adjacency = adjacency
        self._subject = subject
        self._entries: list[LedgerEntry] = []
        for i, entry in enumerate(entries):
            self._add(entry, where=f"entries[{i}]")

    # -- reading

    @property
    def guarantee(self) -> str:
        return self._guarantee

    @property
    def adjacency(self) -> str:
        return self._adjacency

    @property
    def neighboring_relation(self) -> dp_accounting.NeighboringRelation:
        return ADJACENCY[self._adjacency]

    @property
    def subject(self) -> str:
        """Whose ledger this is (a run id or a device id), so a ledger can't silently be resumed for another."""
        return self._subject

    @property
    def kind(self) -> str:
        """The main kind of its entries: "user-level release" or "local DP-SGD" (a record-level ledger may also hold
        "local release" entries: `record_local_release`)."""
        return KIND_OF_GUARANTEE[self._guarantee]

    @property
    def entries(self) -> tuple[LedgerEntry, ...]:
        return tuple(self._entries)

    def events(self) -> list[dp_event.DpEvent]:
        """The DpEvents in release order: what an accountant composes."""
        return [e.event for e in self._entries]

    def events_through_round(self, last_round: int) -> list[dp_event.DpEvent]:
        """The events released in rounds <= `last_round` (epsilon as it stood after that round)."""
        return [e.event for e in self._entries if e.round <= last_round]

    def rounds(self) -> list[int]:
        """The distinct rounds with at least one entry, ascending."""
        return sorted({e.round for e in self._entries})

    def round_keys(self) -> list[tuple[str, int]]:
        """The distinct (run, round) pairs with at least one entry, in ledger order: the rounds a device trained
        in over its lifetime (in a ledger without runs, `("", round)` for each of `rounds()`)."""
        return list(dict.fromkeys((e.run, e.round) for e in self._entries))

    def runs(self) -> list[str]:
        """The run ids in ledger order ("" for entries without one)."""
        return list(dict.fromkeys(e.run for e in self._entries))

    def has(self, run: str, round: int, release: int = 0) -> bool:  # noqa: A002 - the ledger's own field name
        """Whether release (run, round, release) is already recorded (charged)."""
        return any(e.key == (run, round, release) for e in self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[LedgerEntry]:
        return iter(tuple(self._entries))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PrivacyLedger):
            return NotImplemented
        return self.to_json() == other.to_json()

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return (f"PrivacyLedger(guarantee={self._guarantee!r}, adjacency={self._adjacency!r}, "
                f"subject={self._subject!r}, entries={len(self._entries)})")

    # -- appending

    def append(self, *, round: int, event: dp_event.DpEvent, metadata: Mapping[str, Any] | None = None,
               run: str = "", release: int = 0) -> LedgerEntry:
        """Append one release of this ledger's kind. The event is canonicalised so it equals its read-back.

        `run` (a lifetime ledger) keys the entry by (run, round, release); a key already held is refused.
        """
        if not run and release:
            raise LedgerError("append: a release index needs a run id (a ledger without runs numbers releases "
                              "by position)")
        entry = LedgerEntry(round, self.kind, canonical_event(event), dict(metadata or {}), run, release)
        self._add(entry, where=f"entries[{len(self._entries)}]")
        return entry

    def record_local_dpsgd(self, *, round: int, noise_multiplier: float, sample_rate: float,
                           steps: int, run: str = "", release: int = 0, **metadata: Any) -> LedgerEntry:
        """Record the DP-SGD steps one device ran in one round (record-level ledgers) of run `run`.

        Pass *every* optimizer step of the round, including steps on empty Poisson batches; extra keyword
        arguments (``max_grad_norm``, ``expected_batch_size``, ``num_records``, ...) go into the metadata.
        """
        self._require(RECORD_LEVEL, "record_local_dpsgd")
        event = dpsgd_event(noise_multiplier=noise_multiplier, sample_rate=sample_rate, steps=steps)
        meta = {"noise_multiplier": float(noise_multiplier), "sample_rate": float(sample_rate), "steps": int(steps),
                **metadata}
        return self.append(round=round, event=event, metadata=meta, run=run, release=release)

    def record_local_release(self, *, round: int, noise_multiplier: float, sensitivity: float,  # noqa: A002
                             name: str, run: str = "", release: int = 0, **metadata: Any) -> LedgerEntry:
        """Record one statistic this device released with its own Gaussian noise (record-level ledgers): the noise
        std is `noise_multiplier` x `sensitivity`, the L2 change one record can make to the device's contribution,
        so the release is one GaussianDpEvent(noise_multiplier), unsampled."""
        self._require(RECORD_LEVEL, "record_local_release")
        meta = {"release": name, "noise_multiplier": float(noise_multiplier), "sample_rate": None,
                "clip_norm": float(sensitivity), **metadata}
        entry = LedgerEntry(round, LOCAL_RELEASE, canonical_event(dp_event.GaussianDpEvent(float(noise_multiplier))),
                            meta, run, release)
        self._add(entry, where=f"entries[{len(self._entries)}]")
        return entry

    def check_next(self, *, run: str, round: int, release: int = 0) -> None:  # noqa: A002
        """Raise `LedgerError` unless release (run, round, release) could be appended now: call it before the
        work whose charge the entry would record, so nothing is done that the ledger could not hold."""
        self._check_order(LedgerEntry(round, self.kind, dp_event.NonPrivateDpEvent(), {}, run, release),
                          where="next entry")

    def record_user_level_release(self, *, round: int, noise_multiplier: float,
                                  sample_rate: float | None, **metadata: Any) -> LedgerEntry:
        """Record one released noisy aggregate (user-level ledgers); `sample_rate=None` means no amplification.

        Extra keyword arguments (``clip_norm``, ``clients_sampled``, ``clients_aggregated``, ...) go into the
        metadata.
        """
        self._require(USER_LEVEL, "record_user_level_release")
        event = dpfedavg_event(noise_multiplier=noise_multiplier, sample_rate=sample_rate)
        meta = {"noise_multiplier": float(noise_multiplier),
                "sample_rate": None if sample_rate is None else float(sample_rate), **metadata}
        return self.append(round=round, event=event, metadata=meta)

    def record_distributed_release(self, *, round: int, params: Any, **metadata: Any) -> LedgerEntry:  # noqa: A002
        """Record one release whose noise the clients added under secure aggregation (user-level ledgers with the
        zero-out relation): the event is `params.dp_event()` (Skellam in integer units), the metadata the full
        public parameters (`fedrec.shared.privacy.distributed_entries`), so a reader can rebuild the event."""
        self._require(USER_LEVEL, "record_distributed_release")
        if self._adjacency != "replace_special":
            raise LedgerError(f"a distributed-DP release is analysed for the zero-out relation only; this ledger's "
                              f"adjacency is {self._adjacency!r} (create it with adjacency='replace_special')")
        return self.append(round=round, event=params.dp_event(), metadata=entry_metadata(params, **metadata))

    def _require(self, guarantee: str, method: str) -> None:
        if self._guarantee != guarantee:
            raise LedgerError(f"{method}: records {KIND_OF_GUARANTEE[guarantee]!r} entries, which belong in a "
                              f"{guarantee} ledger; this one is {self._guarantee} (it holds {self.kind!r} entries)")

    def _add(self, entry: LedgerEntry, *, where: str) -> None:
        if not isinstance(entry, LedgerEntry):
            raise LedgerError(f"{where}: expected a LedgerEntry, found {type(entry).__name__}")
        if not isinstance(entry.round, int) or isinstance(entry.round, bool) or entry.round < 0:
            raise LedgerError(f"{where}.round: expected an integer >= 0, found {entry.round!r}")
        if entry.kind not in KINDS_OF_GUARANTEE[self._guarantee]:
            raise LedgerError(f"{where}.kind: a {self._guarantee} ledger holds only "
                              f"{' or '.join(map(repr, KINDS_OF_GUARANTEE[self._guarantee]))} entries, "
                              f"found {entry.kind!r}")
        if not entry.run:  # no run id: the release is the entry's position within its round
            entry = attr.evolve(entry, release=sum(e.key[:2] == ("", entry.round) for e in self._entries))
        self._check_order(entry, where=where)
        try:
            json.dumps(dict(entry.metadata), allow_nan=False)
        except (TypeError, ValueError) as e:
            raise LedgerError(f"{where}.metadata: must be JSON with finite numbers: {e}") from None
        self._entries.append(entry)

    def _check_order(self, entry: LedgerEntry, *, where: str) -> None:
        """Refuse an entry that cannot follow this ledger's: a key held twice, a round that goes back within its
        run, or a run that another run has already followed (closed)."""
        last = self._entries[-1] if self._entries else None
        if entry.run and self.has(*entry.key):
            raise LedgerError(f"{where}: release {entry.key} (run, round, release) is already in the ledger; a "
                              "release is charged once")
        if last is not None and last.run == entry.run and entry.round < last.round:
            raise LedgerError(f"{where}.round: rounds never go back; the last entry is round {last.round}"
                              + (f" of run {entry.run!r}" if entry.run else "") + f", found {entry.round}")
        if last is not None and last.run == entry.run and entry.key <= last.key:
            raise LedgerError(f"{where}.release: releases of a round increase; the last is {last.key}, found "
                              f"{entry.key}")
        if last is not None and last.run != entry.run and entry.run in self.runs():
            raise LedgerError(f"{where}.run: run {entry.run!r} was followed by run {last.run!r}; a run once "
                              "followed by another is closed")

    # -- JSON and files

    def to_json(self) -> dict[str, Any]:
        version = LEDGER_VERSION if any(e.run for e in self._entries) else 1  # no run ids: exactly version 1
        return {"format": LEDGER_FORMAT, "version": version,
                "event_codec": codec_version(e.event for e in self._entries),
                "guarantee": self._guarantee, "adjacency": self._adjacency, "subject": self._subject,
                "entries": [e.to_json() for e in self._entries]}

    @classmethod
    def from_json(cls, obj: Any, *, where: str = "ledger") -> PrivacyLedger:
        if not isinstance(obj, Mapping):
            raise LedgerError(f"{where}: expected an object, found {type(obj).__name__}")
        if obj.get("format") != LEDGER_FORMAT:
            raise LedgerError(f"{where}.format: expected {LEDGER_FORMAT!r}, found {obj.get('format')!r}")
        for key, newest in (("version", LEDGER_VERSION), ("event_codec", EVENT_CODEC_VERSION)):
            v = obj.get(key)
            if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= newest:
                raise LedgerError(f"{where}.{key}: this fedrec reads versions 1..{newest}, found {v!r}")
        entries = obj.get("entries")
        if not isinstance(entries, list):
            raise LedgerError(f"{where}.entries: expected an array, found {entries!r}")
        parsed = [LedgerEntry.from_json(e, where=f"{where}.entries[{i}]") for i, e in enumerate(entries)]
        if obj["version"] < RUN_FIELDS_SINCE and any(isinstance(e, Mapping) and ("run" in e or "release" in e)
                                                      for e in entries):
            raise LedgerError(f"{where}: entries with 'run'/'release' need version >= {RUN_FIELDS_SINCE}, found "
                              f"version {obj['version']}")
        try:
            return cls(guarantee=obj.get("guarantee"), adjacency=obj.get("adjacency", "add_or_remove_one"),
                       subject=obj.get("subject", ""), entries=parsed)
        except LedgerError as e:
            raise LedgerError(f"{where}: {e}") from None

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=True, allow_nan=False) + "\n"

    @classmethod
    def loads(cls, text: str, *, where: str = "ledger") -> PrivacyLedger:
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise LedgerError(f"{where}: not valid JSON: {e}") from None
        return cls.from_json(obj, where=where)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the ledger crash-safely (temp file, fsync, atomic replace). Call it after every append."""
        return atomic_write_bytes(path, self.dumps().encode("utf-8"))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PrivacyLedger:
        return cls.loads(Path(path).read_text(encoding="utf-8"), where=str(path))

    @classmethod
    def load_or_create(cls, path: str | os.PathLike[str], *, guarantee: str, adjacency: str = "add_or_remove_one",
                       subject: str = "") -> PrivacyLedger:
        """Resume the ledger at `path`, or start an empty one; a resumed ledger must be for the same thing.

        Resuming someone else's ledger (another device, another guarantee) would silently mix histories, so a
        mismatch is an error, not a fresh start.
        """
        if not Path(path).exists():
            return cls(guarantee=guarantee, adjacency=adjacency, subject=subject)
        ledger = cls.load(path)
        for name, want, found in (("guarantee", guarantee, ledger.guarantee), ("adjacency", adjacency,
                                  ledger.adjacency), ("subject", subject, ledger.subject)):
            if want != found:
                raise LedgerError(f"{path}: resuming a ledger with {name} {found!r}, expected {want!r}")
        return ledger
