"""`user_dp.noise = distributed` in a whole (small, in-process) run: the clients add Skellam noise shares before
masking, the server adds none, every release is one Skellam event whose recorded parameters rebuild it, the signed
report verifies (event recomputed, epsilon recomputed by `rdp-distributed`, the Gaussian lower reference), and a
round with fewer survivors than accounted is aborted before anything is unmasked."""

from __future__ import annotations

import json

import numpy as np
import pytest

import fedrec.client.secure_aggregation as client_secagg
from fedrec.server.distributed_release import DistributedDpRelease
from fedrec.server.federation import run_federation
from fedrec.server.round import run_round
from fedrec.shared.config import RunConfig
from fedrec.shared.privacy.distributed_dp import SkellamDpEvent
from fedrec.shared.privacy.distributed_entries import entry_params
from fedrec.shared.privacy.keys import load_public_key
from fedrec.shared.privacy.ledger import PrivacyLedger
from fedrec.shared.privacy.report import has_failures, verify_report_file
from fedrec.shared.secagg import wire
from fedrec.shared.secagg.distributed_encoding import DistributedEncoding

DISTRIBUTED = {"user_dp.enabled": True, "user_dp.noise": "distributed", "user_dp.noise_multiplier": 0.8}


def test_a_distributed_round_unmasks_a_noisy_sum_and_records_its_skellam_event(small_federation) -> None:
    grid, fed = small_federation(**DISTRIBUTED)
    assert isinstance(fed.release, DistributedDpRelease) and fed.user_dp is fed.release
    task = fed.adapter_task(1)
    collector = fed.collector(task, 1)
    assert isinstance(collector.round.encoding, DistributedEncoding)
    outcome = run_round(grid, fed, 1, task)
    assert outcome.update is not None and outcome.row["updates"] == 6
    assert outcome.row["ddp_min_survivors"] == 6  # ceil(0.9 x 6)
    assert outcome.row["ddp_noise_std"] == pytest.approx(0.8 * fed.cfg.user_dp.clip_norm, rel=1e-9)
    # no float ever leaves a device: the only arrays are the masked uploads (ring words, padded length)
    setups = [r for r in grid.received if r.metadata.message_type == wire.MESSAGE_TYPES[wire.MASKED_INPUT]]
    assert setups and all(np.asarray(a.numpy()).dtype == np.uint32 for r in setups
                          for rec in r.content.array_records.values() for a in rec.values())
    (entry,) = fed.user_dp.ledger.entries
    assert isinstance(entry.event, SkellamDpEvent) and entry.metadata["release"] == "adapter"
    params = entry_params(entry)  # raises unless the recorded parameters rebuild the event exactly
    assert params.noise_multiplier == pytest.approx(0.8, rel=1e-11)
    assert params.padded_dim >= sum(v.size for v in fed.global_state.values())
    assert fed.user_dp.ledger.adjacency == "replace_special"


def test_fewer_survivors_than_accounted_abort_before_unmasking(small_federation, monkeypatch) -> None:
    """t = 6 of 6 (survivor_fraction 1): one device refusing its masked input aborts the round before the unmask
    stage is even sent, and nothing enters the ledger (the server learned nothing)."""
    grid, fed = small_federation(**DISTRIBUTED, **{"user_dp.survivor_fraction": 1.0})
    original = client_secagg.SecAggClient.masked_input
    refused = []

    def flaky(self, request):  # noqa: ANN001, ANN202
        if not refused:
            refused.append(True)
            raise client_secagg.SecAggProtocolError("this device went offline")
        return original(self, request)

    monkeypatch.setattr(client_secagg.SecAggClient, "masked_input", flaky)
    outcome = run_round(grid, fed, 1, fed.adapter_task(1))
    assert outcome.update is None and outcome.row["status"].startswith("aborted: masked-input")
    assert "t = 6" in outcome.row["status"]
    assert not any(r.metadata.message_type == wire.MESSAGE_TYPES[wire.UNMASK] for r in grid.received)
    assert len(fed.user_dp.ledger) == 0


def test_a_distributed_run_with_releases_writes_a_report_that_verifies(small_federation, tmp_path) -> None:
    grid, fed = small_federation(**DISTRIBUTED, **{"hybrid.releases": "popularity,cooccurrence",
                                                   "hybrid.gram_head": 8, "hybrid.gram_k": 3, "run.rounds": 1,
                                                   "hybrid.shares": "popularity:1,cooccurrence:2,adapter:1",
                                                   "user_dp.target_epsilon": 20.0})
    cfg = fed.cfg
    run = run_federation(grid, RunConfig.from_mapping({**cfg.to_flat(), "run.dir": str(tmp_path / "again")}))
    report = json.loads((run / "privacy-report.json").read_text())
    user = report["user_level"]
    assert user["accounting"]["accountant"] == "rdp-distributed"
    assert user["mechanism"]["noise_distribution"] == "skellam" and user["adjacency"] == "replace_special"
    assert user["sampling"]["method"] == "none"
    assert user["accounting"]["epsilon"] <= 20.0
    ledger = PrivacyLedger.from_json(user["ledger"])
    assert [e.metadata["release"] for e in ledger] == ["popularity", "cooccurrence", "adapter"]
    assert all(isinstance(e.event, SkellamDpEvent) for e in ledger)
    # the wrap-around probability is stated: per entry, and in the report's protocol line
    assert all(e.metadata["log10_wrap_probability_per_round"] <= -9 for e in ledger)
    assert "probability of a modular wrap-around at most 10^" in report["scope"]["trust_model"]["secure_aggregation"]
    assert "no noise" in report["scope"]["dp_setting"] or "adds none" in report["scope"]["dp_setting"]
    findings = verify_report_file(run / "privacy-report.json",
                                  public_key=load_public_key(run / "server-ed25519.pub"))
    assert not has_failures(findings), [f for f in findings if f.status == "fail"]
    passed = {f.check for f in findings if f.status == "pass"}
    assert {"user_level.ledger.parse", "user_level.releases.declared", "user_level.epsilon.recompute",
            "user_level.epsilon.independent"} <= passed


def test_a_report_whose_event_disagrees_with_its_parameters_fails_verification(small_federation, tmp_path) -> None:
    """Tampering with a recorded parameter (here the scale) is caught: the event no longer rebuilds from it."""
    grid, fed = small_federation(**DISTRIBUTED)
    run_round(grid, fed, 1, fed.adapter_task(1))
    ledger = fed.user_dp.ledger.to_json()
    ledger["entries"][0]["metadata"]["distributed_dp"]["scale"] *= 1.5
    with pytest.raises(ValueError, match="not the one its recorded parameters give"):
        entry_params(PrivacyLedger.from_json(ledger).entries[0])


def test_distributed_noise_needs_secure_aggregation() -> None:
    with pytest.raises(ValueError, match="secagg.enabled"):
        RunConfig.from_mapping({**{k: v for k, v in DISTRIBUTED.items()}, "secagg.enabled": False})


def test_a_target_epsilon_is_calibrated_with_the_skellam_plan_and_holds_for_any_vector_size() -> None:
    """The plan uses the largest vector the encoding allows, so the run's actual releases (smaller vectors, hence
    smaller sensitivities in integer units) stay within the target; the plan is tight (within 1%)."""
    from fedrec.server.calibration import resolve_noise
    from fedrec.server.distributed_release import ACCOUNTANT, calibration
    from fedrec.shared.privacy.accountants import make_accountant

    cfg = RunConfig.from_mapping({**DISTRIBUTED, "user_dp.target_epsilon": 4.0, "run.rounds": 5,
                                  "hybrid.releases": "popularity", "hybrid.shares": "popularity:1,adapter:1",
                                  "run.client_sampling": "poisson", "run.clients_per_round": 50})
    out = resolve_noise(cfg, 500)
    z_pop = float(out.hybrid.noise_multipliers.split(":")[1])
    z_adapter = out.user_dp.noise_multiplier
    assert out.user_dp.epsilon_max == 4.0
    acc = make_accountant(ACCOUNTANT, adjacency="replace_special")
    for dim in (10, 3000, 221_244, 2**24):
        events = [calibration(clip_norm=1.0, dim=dim, noise_multiplier=z_pop, population=500, ring_bits=32,
                              delta=1e-6).event]
        events += [calibration(clip_norm=0.7, dim=dim, noise_multiplier=z_adapter, population=500, ring_bits=32,
                               delta=1e-6).event] * 5
        eps = acc.epsilon(events, delta=1e-6)  # min(1e-6, 1 / (10 N)) at N = 500
        assert 3.9 < eps <= 4.0, dim


def test_a_device_refuses_a_distributed_round_without_noise(small_federation) -> None:
    """A round setup whose parameters carry no noise (client_variance 0) is refused by every device (the "secagg"
    error code): a device never sends an update without its noise share in distributed mode."""
    grid, fed = small_federation(**DISTRIBUTED)
    release = fed.release
    original = release.encoding_for

    def quiet(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        import dataclasses

        enc = original(*args, **kwargs)
        return dataclasses.replace(enc, params=dataclasses.replace(enc.params, client_variance=0.0))

    release.encoding_for = quiet
    outcome = run_round(grid, fed, 1, fed.adapter_task(1))
    assert outcome.update is None and outcome.row["updates"] == 0 and outcome.row["failed"] == 6
    assert len(fed.user_dp.ledger) == 0


def test_a_wrap_around_discards_the_round_but_its_privacy_is_spent(small_federation, monkeypatch) -> None:
    """The server unmasked the (noisy) sum but cannot read it: nothing is released, the round says so, and its
    Skellam event is in the ledger (the server saw the sum)."""
    from fedrec.shared.privacy.distributed_dp import WrapAroundError

    def wrapped(self, total, count):  # noqa: ANN001, ANN202
        raise WrapAroundError("1 coordinate outside the envelope", count=1, max_abs=2**31 - 1)

    monkeypatch.setattr(DistributedEncoding, "decode_sum", wrapped)
    grid, fed = small_federation(**DISTRIBUTED)
    outcome = run_round(grid, fed, 1, fed.adapter_task(1))
    assert outcome.update is None and outcome.row["status"].startswith("discarded: wrap-around")
    (entry,) = fed.user_dp.ledger.entries
    assert entry.metadata["discarded"].startswith("wrap-around") and isinstance(entry.event, SkellamDpEvent)
