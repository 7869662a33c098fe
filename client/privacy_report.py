"""Write a device's signed record-level epsilon report into its state directory.

The device is the authority on its record-level guarantee: it holds the ledger of every DP-SGD round it ran and
signs the report with its own key, so nobody (the server included) can alter the figure without breaking the
signature. The server's run report only summarises the epsilons devices reported as plain metrics.
"""

from __future__ import annotations

from pathlib import Path

from fedrec.client.device_state import DeviceState
from fedrec.shared.config import RunConfig
from fedrec.shared.io import atomic_write_text
from fedrec.shared.privacy import PrivacyLedger
from fedrec.shared.privacy.ledger import LOCAL_RELEASE
from fedrec.shared.privacy.report import (
    GuaranteeInputs,
    Mechanism,
    Sampling,
    Scope,
    build_device_report,
    sign_report,
    write_report,
)
from fedrec.shared.privacy.report.inputs import ReleaseInputs
from fedrec.shared.privacy.report.render import render_markdown
from fedrec.shared.privacy.report.statements import RECORD_UNIT
from fedrec.shared.train.dp_sgd import NOISE_RNG, OPACUS_ACCOUNTANTS, plan_round

#: Appended to the unit when the ledger holds the device's own noisy releases (`client.statistics`).
RELEASE_UNIT_NOTE = (
    " Its round-0 releases (local release entries) are built from one item per slot (the slot's most played), so "
    "adding or removing a slot moves the device's contribution by at most the sensitivity each entry records, "
    "and its own noise is that times the entry's noise multiplier: the same unit as its DP-SGD steps."
)

#: What a DP device sends to the server outside the guarantee (plain metrics), for the report's trust notes.
SENT_IN_THE_CLEAR = (
    "sent to the server in the clear, outside the guarantee: whether the device trained, declined or failed (an "
    "error code only), and its lifetime record-level epsilon (a function of the public settings and of how many "
    "rounds it trained in, in this run and before); no timing, step count or memory figure; its evaluation "
    "figures only inside a secure sum with the other evaluated devices"
)


def write_device_report(state: DeviceState, cfg: RunConfig, ledger: PrivacyLedger, *, run_id: str,
                        device_id: str) -> Path:
    """Build, sign (device key) and write `privacy-report.json` and `.md` for `ledger`; returns the JSON path.

    The ledger is the device's lifetime ledger, so the report covers every run it took part in and lists them
    (`fedrec.shared.privacy.report.lifetime`); `run_id` names the current run, whose settings `cfg` holds.

    The HTML page and the epsilon plot are left to `fedrec audit render` (matplotlib on every round of every
    device would cost more than the report is worth on a small device).
    """
    plan = plan_round(cfg)
    current = ledger.runs()[-1] if ledger.runs() else ""
    releases = tuple(ReleaseInputs(name=str(e.metadata["release"]),
                                   noise_multiplier=float(e.metadata["noise_multiplier"]),
                                   sensitivity=float(e.metadata["clip_norm"]),
                                   description=f"this device's contribution to the {e.metadata['release']} statistic "
                                               "with its own Gaussian noise (std z x the sensitivity)",
                                   participation="this device's one contribution in the run's round 0")
                     for e in ledger if e.kind == LOCAL_RELEASE and e.run == current)
    scope = Scope(dp_setting="local DP-SGD (Opacus) on the device", server="untrusted for this guarantee",
                  trust_notes="the noise is added on the device before anything leaves it, so the guarantee holds "
                              "against the server, other clients and anyone who sees the global adapters; "
                              + SENT_IN_THE_CLEAR)
    inputs = GuaranteeInputs(
        ledger=ledger,
        mechanism=Mechanism.dp_sgd(noise_multiplier=cfg.record_dp.noise_multiplier,
                                   max_grad_norm=cfg.record_dp.max_grad_norm, rng=NOISE_RNG),
        sampling=Sampling.poisson(population=plan.num_records, sample_rate=plan.sample_rate,
                                  evidence="each step, each of the K slots joins independently with probability q "
                                           "(on the device); empty batches are stepped, never skipped"),
        delta=cfg.record_dp.delta, rounds_run=len(ledger.round_keys()),  # (run, round): over the device's life
        accountant=OPACUS_ACCOUNTANTS[cfg.record_dp.accountant],
        cross_check=("rdp",),  # dp-accounting RDP, independent of Opacus; PLD costs ~2 s a round on a device
        releases=releases,
        unit_description=(RECORD_UNIT + RELEASE_UNIT_NOTE) if any(e.kind == LOCAL_RELEASE for e in ledger) else None,
    )
    report = build_device_report(run_id=run_id, device_id=device_id, scope=scope, record_level=inputs)
    signed = sign_report(report, state.signing_key())
    path = write_report(signed, state.report_path)
    atomic_write_text(path.with_suffix(".md"), render_markdown(signed))
    return path
