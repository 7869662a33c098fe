"""The distributed-DP events inside fedrec's ledger machinery: the `rdp-distributed` accountant, the event codec
(version 2 only when needed), ledger entries that carry their parameters, and the Gaussian lower reference."""

from __future__ import annotations

import json

import pytest
from dp_accounting import dp_event

from fedrec.shared.privacy.accountants import make_accountant
from fedrec.shared.privacy.distributed_dp import accounting, calibrate
from fedrec.shared.privacy.distributed_entries import entry_components, entry_params, gaussian_surrogate
from fedrec.shared.privacy.errors import LedgerError, UnsupportedMechanism
from fedrec.shared.privacy.events import codec_version, event_from_json, event_to_json
from fedrec.shared.privacy.ledger import PrivacyLedger


@pytest.fixture(scope="module")
def params():
    return calibrate(clip_norm=0.5, dim=5000, noise_multiplier=1.1, min_survivors=40, max_clients=100).params


def test_rdp_distributed_is_the_library_accountant_and_plain_rdp_for_gaussians(params) -> None:
    acc = make_accountant("rdp-distributed", adjacency="replace_special")
    events = [params.dp_event()] * 3 + [dp_event.GaussianDpEvent(2.0)]
    assert acc.epsilon(events, delta=1e-6) == pytest.approx(accounting.epsilon(events, delta=1e-6), rel=1e-12)
    gauss = [dp_event.GaussianDpEvent(1.3)] * 5
    assert make_accountant("rdp-distributed").epsilon(gauss, delta=1e-6) == pytest.approx(
        make_accountant("rdp").epsilon(gauss, delta=1e-6), rel=1e-12)
    # the Skellam bound is for the zero-out relation only; other accountants cannot read the event at all
    with pytest.raises(UnsupportedMechanism, match="REPLACE_SPECIAL"):
        make_accountant("rdp-distributed", adjacency="add_or_remove_one").epsilon([params.dp_event()], delta=1e-6)
    for other in ("rdp", "pld"):
        with pytest.raises(UnsupportedMechanism):
            make_accountant(other, adjacency="replace_special").epsilon([params.dp_event()], delta=1e-6)


def test_codec_round_trips_the_events_and_stays_version_1_without_them(params) -> None:
    event = dp_event.SelfComposedDpEvent(params.dp_event(), 4)
    assert event_from_json(json.loads(json.dumps(event_to_json(event)))) == event
    assert codec_version([dp_event.GaussianDpEvent(1.0)]) == 1 and codec_version([event]) == 2
    plain = PrivacyLedger(guarantee="user-level")
    plain.record_user_level_release(round=1, noise_multiplier=1.0, sample_rate=None)
    assert plain.to_json()["event_codec"] == 1  # readable by every earlier fedrec


def test_a_ledger_entry_rebuilds_its_event_from_its_parameters(params) -> None:
    ledger = PrivacyLedger(guarantee="user-level", adjacency="replace_special")
    ledger.record_distributed_release(round=1, params=params, clients_aggregated=40, release="adapter")
    back = PrivacyLedger.loads(ledger.dumps())
    assert back == ledger and back.to_json()["event_codec"] == 2
    assert entry_params(back.entries[0]) == params
    (component,) = entry_components(back.entries[0])
    assert component.noise_multiplier == pytest.approx(1.1, rel=1e-11) and component.sample_rate is None
    bad = ledger.to_json()
    bad["entries"][0]["metadata"]["distributed_dp"]["client_variance"] /= 2  # half the noise, same event
    with pytest.raises(LedgerError, match="recorded parameters"):
        entry_params(PrivacyLedger.from_json(bad).entries[0])
    missing = ledger.to_json()
    del missing["entries"][0]["metadata"]["distributed_dp"]
    with pytest.raises(LedgerError, match="without metadata.distributed_dp"):
        entry_components(PrivacyLedger.from_json(missing).entries[0])


def test_a_distributed_release_needs_the_zero_out_relation(params) -> None:
    with pytest.raises(LedgerError, match="zero-out"):
        PrivacyLedger(guarantee="user-level").record_distributed_release(round=1, params=params)


def test_the_gaussian_surrogate_is_a_lower_reference(params) -> None:
    events = [params.dp_event()] * 10
    skellam = make_accountant("rdp-distributed", adjacency="replace_special").epsilon(events, delta=1e-6)
    surrogate = [gaussian_surrogate(e) for e in events]
    assert all(isinstance(e, dp_event.GaussianDpEvent) for e in surrogate)
    assert make_accountant("rdp", adjacency="replace_special").epsilon(surrogate, delta=1e-6) <= skellam
    pld = make_accountant("pld", adjacency="replace_special").epsilon(surrogate, delta=1e-6)
    assert pld <= skellam and pld > 0.8 * skellam  # the Skellam figure is essentially the Gaussian's
