"""The privacy ledger: standard events, exact JSON round trips, the decoder's allow-list, crash-safe persistence
and resuming."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
from dp_accounting import dp_event as E
from hypothesis import given, settings
from hypothesis import strategies as st

from fedrec.shared.privacy.errors import LedgerError, UnsupportedMechanism
from fedrec.shared.privacy.events import (
    compress_events,
    dpfedavg_event,
    dpsgd_event,
    event_from_json,
    event_to_json,
    gaussian_components,
)
from fedrec.shared.privacy.ledger import PrivacyLedger

ALL_EVENTS = [
    E.NoOpDpEvent(), E.NonPrivateDpEvent(), E.UnsupportedDpEvent(),
    E.GaussianDpEvent(1.1), E.LaplaceDpEvent(0.5), E.DiscreteLaplaceDpEvent(0.3, 2),
    E.RandomizedResponseDpEvent(0.2, 4), E.ZCDpEvent(0.5, 0.1),
    E.PoissonSampledDpEvent(0.01, E.GaussianDpEvent(1.0)),
    E.SampledWithReplacementDpEvent(1000, 10, E.GaussianDpEvent(2.0)),
    E.SampledWithoutReplacementDpEvent(1000, 10, E.LaplaceDpEvent(1.0)),
    E.SelfComposedDpEvent(E.GaussianDpEvent(3.0), 7),
    E.ComposedDpEvent([E.GaussianDpEvent(1.0), E.SelfComposedDpEvent(E.LaplaceDpEvent(2.0), 3)]),
    E.SingleEpochTreeAggregationDpEvent(1.5, [3, 4]),
    E.RepeatAndSelectDpEvent(E.GaussianDpEvent(1.0), 2.0, math.inf),
    E.MixtureOfGaussiansDpEvent(1.0, [0.0, 1.0], [0.5, 0.5]),
    E.TruncatedSubsampledGaussianDpEvent(1000, 0.01, 20, 1.3),
]


def test_standard_events_have_the_documented_shape():
    """DP-SGD = SelfComposed(PoissonSampled(q, Gaussian(z)), steps); DP-FedAvg with/without amplification."""
    # Execute
    sgd = dpsgd_event(noise_multiplier=1.1, sample_rate=0.02, steps=50)
    avg = dpfedavg_event(noise_multiplier=1.2, sample_rate=0.01)
    plain = dpfedavg_event(noise_multiplier=5.0, sample_rate=None)
    # Assert
    assert sgd == E.SelfComposedDpEvent(E.PoissonSampledDpEvent(0.02, E.GaussianDpEvent(1.1)), 50)
    assert avg == E.PoissonSampledDpEvent(0.01, E.GaussianDpEvent(1.2))
    assert plain == E.GaussianDpEvent(5.0)
    assert gaussian_components(sgd) == [(1.1, 0.02, 50)]
    assert gaussian_components(plain) == [(5.0, None, 1)]


@pytest.mark.parametrize("kwargs, field", [
    ({"noise_multiplier": -1.0, "sample_rate": 0.1, "steps": 1}, "noise_multiplier"),
    ({"noise_multiplier": 1.0, "sample_rate": 0.0, "steps": 1}, "sample_rate"),
    ({"noise_multiplier": 1.0, "sample_rate": 1.5, "steps": 1}, "sample_rate"),
    ({"noise_multiplier": 1.0, "sample_rate": 0.1, "steps": 0}, "steps"),
    ({"noise_multiplier": math.nan, "sample_rate": 0.1, "steps": 3}, "noise_multiplier"),
])
def test_event_helpers_reject_bad_knobs_naming_them(kwargs, field):
    with pytest.raises(LedgerError, match=field):
        dpsgd_event(**kwargs)


def test_privacy_knobs_are_keyword_only():
    """z, q and steps can't be swapped by position."""
    with pytest.raises(TypeError):
        dpsgd_event(1.0, 0.01, 10)  # type: ignore[misc]


@pytest.mark.parametrize("event", ALL_EVENTS, ids=lambda e: type(e).__name__)
def test_every_dp_accounting_event_round_trips_exactly(event):
    # Execute
    text = json.dumps(event_to_json(event), allow_nan=False)
    back = event_from_json(json.loads(text))
    # Assert
    assert back == event
    assert json.dumps(event_to_json(back), allow_nan=False) == text


@settings(max_examples=60, deadline=None)
@given(z=st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False),
       q=st.floats(min_value=1e-12, max_value=1.0, exclude_min=False),
       steps=st.integers(min_value=1, max_value=10**9))
def test_ledger_json_round_trip_is_exact_for_any_float(z, q, steps):
    """Every float survives write -> read bit for bit, and the ledger reads back equal."""
    # Prepare
    ledger = PrivacyLedger(guarantee="record-level", subject="d")
    ledger.record_local_dpsgd(round=1, noise_multiplier=z, sample_rate=q, steps=steps)
    # Execute
    back = PrivacyLedger.loads(ledger.dumps())
    # Assert
    assert back == ledger
    assert back.entries[0].event == ledger.entries[0].event
    assert gaussian_components(back.entries[0].event) == [(z, q, steps)]
    assert back.dumps() == ledger.dumps()


def test_numpy_scalars_and_tuples_are_canonicalised_on_append():
    """What is stored equals what is read back, even if the caller used numpy numbers or tuples."""
    np = pytest.importorskip("numpy")
    # Prepare
    ledger = PrivacyLedger(guarantee="user-level")
    event = E.ComposedDpEvent((E.PoissonSampledDpEvent(np.float64(0.25), E.GaussianDpEvent(np.float32(2.0))),))
    # Execute
    ledger.append(round=np.int64(3).item(), event=event)
    # Assert
    assert PrivacyLedger.loads(ledger.dumps()) == ledger
    assert type(ledger.entries[0].event.events) is list


@pytest.mark.parametrize("obj, needle", [
    ({"dp_event": "os.system"}, "dp_event"),
    ({"dp_event": "DpEvent"}, "dp_event"),
    ({"dp_event": "GaussianDpEvent", "noise_multiplier": 1.0, "extra": 2}, "extra"),
    ({"dp_event": "PoissonSampledDpEvent", "sampling_probability": 0.1, "event": {"noise_multiplier": 1}},
     "event.event"),
    ({"noise_multiplier": 1.0}, "dp_event"),
])
def test_decoder_accepts_only_allow_listed_events(obj, needle):
    """The file never makes the reader import a module; unknown classes or fields are refused with a path."""
    with pytest.raises(LedgerError, match=needle):
        event_from_json(obj)


def test_a_ledger_holds_one_guarantee_and_rounds_never_go_back():
    # Prepare
    ledger = PrivacyLedger(guarantee="user-level", subject="run")
    ledger.record_user_level_release(round=3, noise_multiplier=1.0, sample_rate=None)
    # Execute / Assert
    with pytest.raises(LedgerError, match="rounds never go back"):
        ledger.record_user_level_release(round=2, noise_multiplier=1.0, sample_rate=None)
    with pytest.raises(LedgerError, match="local DP-SGD"):
        ledger.record_local_dpsgd(round=4, noise_multiplier=1.0, sample_rate=0.1, steps=3)
    with pytest.raises(LedgerError, match="metadata"):
        ledger.record_user_level_release(round=4, noise_multiplier=1.0, sample_rate=None, loss=math.nan)
    assert len(ledger) == 1 and ledger.rounds() == [3]


def _dpsgd(ledger: PrivacyLedger, run: str, rnd: int, release: int = 0) -> None:
    ledger.record_local_dpsgd(round=rnd, run=run, release=release, noise_multiplier=1.0, sample_rate=0.25, steps=4)


def test_a_lifetime_ledger_keys_entries_by_run_round_and_release():
    """(run, round, release) is charged once; rounds go back only in a new run; a run once left is closed."""
    # Prepare: run A rounds 1-2, then run B starts again at round 1 (a device's second run)
    ledger = PrivacyLedger(guarantee="record-level", subject="phone")
    _dpsgd(ledger, "A", 1)
    _dpsgd(ledger, "A", 2)
    _dpsgd(ledger, "B", 1)
    _dpsgd(ledger, "B", 1, release=1)  # a second release in the same round needs its own index
    # Execute / Assert
    with pytest.raises(LedgerError, match="already in the ledger"):
        _dpsgd(ledger, "B", 1)  # re-delivered: never charged twice
    with pytest.raises(LedgerError, match="rounds never go back"):
        _dpsgd(ledger, "B", 0)
    with pytest.raises(LedgerError, match="run 'A' was followed by run 'B'"):
        _dpsgd(ledger, "A", 3)
    with pytest.raises(LedgerError, match="already in the ledger"):
        ledger.check_next(run="A", round=2)  # what a device asks before it trains
    ledger.check_next(run="B", round=2)
    ledger.check_next(run="C", round=1)
    assert ledger.round_keys() == [("A", 1), ("A", 2), ("B", 1)] and ledger.runs() == ["A", "B"]
    assert [e.key for e in ledger] == [("A", 1, 0), ("A", 2, 0), ("B", 1, 0), ("B", 1, 1)]
    assert PrivacyLedger.loads(ledger.dumps()) == ledger and ledger.to_json()["version"] == 2


def test_a_ledger_without_runs_is_written_as_version_1_exactly_as_before():
    """The server's user-level ledger and old device ledgers: no run fields, version 1, releases by position."""
    # Prepare
    ledger = PrivacyLedger(guarantee="user-level", subject="run")
    ledger.record_user_level_release(round=1, noise_multiplier=1.0, sample_rate=None)
    ledger.record_user_level_release(round=1, noise_multiplier=1.0, sample_rate=None)
    # Execute
    obj = ledger.to_json()
    # Assert
    assert obj["version"] == 1 and all(set(e) == {"round", "kind", "event", "metadata"} for e in obj["entries"])
    assert [e.key for e in PrivacyLedger.from_json(obj)] == [("", 1, 0), ("", 1, 1)]
    obj["entries"][0]["run"] = "A"  # a version-1 file never holds the version-2 fields
    with pytest.raises(LedgerError, match="version >= 2"):
        PrivacyLedger.from_json(obj)
    with pytest.raises(LedgerError, match="release index needs a run id"):
        ledger.append(round=2, event=dpfedavg_event(noise_multiplier=1.0, sample_rate=None), release=1)


def test_save_is_atomic_and_resume_continues_the_same_ledger(tmp_path: Path):
    """After a crash between rounds, load_or_create gives back every entry; appending continues the ledger."""
    # Prepare
    path = tmp_path / "ledger.json"
    ledger = PrivacyLedger.load_or_create(path, guarantee="record-level", subject="device-1")
    ledger.record_local_dpsgd(round=1, noise_multiplier=1.0, sample_rate=0.05, steps=20)
    ledger.save(path)
    # Execute: a "new process" resumes
    resumed = PrivacyLedger.load_or_create(path, guarantee="record-level", subject="device-1")
    resumed.record_local_dpsgd(round=2, noise_multiplier=1.0, sample_rate=0.05, steps=20)
    resumed.save(path)
    # Assert
    assert [e.round for e in PrivacyLedger.load(path)] == [1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ledger.json"]  # no temp files left behind
    with pytest.raises(LedgerError, match="subject"):
        PrivacyLedger.load_or_create(path, guarantee="record-level", subject="device-2")


def test_a_crash_while_saving_leaves_the_old_ledger_intact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # Prepare
    path = tmp_path / "ledger.json"
    ledger = PrivacyLedger(guarantee="user-level")
    ledger.record_user_level_release(round=1, noise_multiplier=1.0, sample_rate=None)
    ledger.save(path)
    before = path.read_bytes()
    ledger.record_user_level_release(round=2, noise_multiplier=1.0, sample_rate=None)

    def crash(*args, **kwargs):
        raise OSError("power cut")

    monkeypatch.setattr(os, "replace", crash)
    # Execute
    with pytest.raises(OSError, match="power cut"):
        ledger.save(path)
    # Assert
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ledger.json"]


@pytest.mark.parametrize("mutate, needle", [
    (lambda d: d.update(version=99), "version"),
    (lambda d: d.update(format="other"), "format"),
    (lambda d: d["entries"][0].update(round=-1), "entries[0].round"),
    (lambda d: d["entries"][0].update(kind="local DP-SGD"), "kind"),
    (lambda d: d["entries"][0]["event"].update(dp_event="Nope"), "entries[0].event.dp_event"),
])
def test_malformed_ledgers_are_refused_naming_the_field(mutate, needle):
    # Prepare
    ledger = PrivacyLedger(guarantee="user-level")
    ledger.record_user_level_release(round=1, noise_multiplier=1.0, sample_rate=0.1)
    obj = ledger.to_json()
    mutate(obj)
    # Execute / Assert
    with pytest.raises(LedgerError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        PrivacyLedger.from_json(obj)


def test_compress_events_groups_identical_mechanisms():
    """500 identical rounds become one SelfComposed event; NoOps vanish; distinct mechanisms stay apart."""
    # Prepare
    a = dpfedavg_event(noise_multiplier=1.0, sample_rate=0.01)
    b = dpsgd_event(noise_multiplier=1.0, sample_rate=0.01, steps=3)
    # Execute
    out = compress_events([a] * 500 + [E.NoOpDpEvent(), b, E.ComposedDpEvent([a, b])])
    # Assert
    assert out == [E.SelfComposedDpEvent(a, 500 + 3 + 1 + 3)]  # b is 3 x a, so everything is one group
    assert compress_events([E.GaussianDpEvent(1.0), E.GaussianDpEvent(2.0)]) == [E.GaussianDpEvent(1.0),
                                                                                E.GaussianDpEvent(2.0)]


def test_gaussian_components_refuses_other_mechanisms():
    with pytest.raises(UnsupportedMechanism, match="LaplaceDpEvent"):
        gaussian_components(E.SelfComposedDpEvent(E.LaplaceDpEvent(1.0), 2))
