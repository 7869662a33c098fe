"""Write the run's signed epsilon report (JSON) and its human renderings (Markdown, HTML, plot).

The user-level section comes from the server's DP-FedAvg ledger; the record-level section only summarises the
epsilons devices reported (they are self-reported metrics, sent in the clear; each device's own signed report
is the authoritative record-level statement).
"""

from __future__ import annotations

from pathlib import Path

from fedrec.server.central_dp import RNG_DESCRIPTION, UserLevelDP
from fedrec.shared.config import RunConfig
from fedrec.shared.privacy.keys import load_or_create_private_key, save_public_key
from fedrec.shared.privacy.render import write_rendered
from fedrec.shared.privacy.report import (
    GuaranteeInputs,
    Mechanism,
    Sampling,
    Scope,
    build_run_report,
    sign_report,
    write_report,
)

REPORT = "privacy-report.json"


def write_run_report(run: Path, cfg: RunConfig, dp: UserLevelDP | None, *, rounds_run: int,
                     record_epsilons: list[float]) -> Path:
    """Build, sign and write `privacy-report.json` (+ .md/.html/.png) into the run directory."""
    notes = ("central DP: the server sees each client's clipped update in the clear (no secure aggregation "
             "yet) and is trusted to add the noise; the guarantee holds against everyone who sees the released "
             "global adapters") if dp is not None else "no user-level mechanism in this run"
    scope = Scope(dp_setting="central (trusted server adds the noise)" if dp is not None else "local (on device)",
                  trust_notes=notes)
    user_level = None
    if dp is not None:
        population = dp.population
        sampling = (Sampling.poisson(population=population, sample_rate=dp.sample_rate,
                                     evidence="server-side Poisson sampling over the N connected clients, secret "
                                              "seed; a sampled client that fails is a dropout, never replaced")
                    if dp.poisson else
                    Sampling.no_amplification(population=population,
                                              expected_sample_size=cfg.clients_sampled(population),
                                              evidence="fixed-size sample; no amplification claimed"))
        user_level = GuaranteeInputs(
            ledger=dp.ledger,
            mechanism=Mechanism.dp_fedavg(noise_multiplier=cfg.user_noise_multiplier, clip_norm=cfg.user_clip_norm,
                                          rng=RNG_DESCRIPTION),
            sampling=sampling, delta=dp.delta, rounds_run=rounds_run,
        )
    report = build_run_report(
        run_id=run.name, scope=scope, user_level=user_level,
        record_level_epsilons=record_epsilons,
        record_level_delta=cfg.record_delta if cfg.record_dp and record_epsilons else None,
        record_level_accountant=f"opacus-{cfg.record_accountant}" if cfg.record_dp and record_epsilons else None,
    )
    key_path = Path(cfg.server_key) if cfg.server_key else run.parent / "server-ed25519.pem"
    key = load_or_create_private_key(key_path)
    save_public_key(key, run / "server-ed25519.pub")
    path = write_report(sign_report(report, key), run / REPORT)
    write_rendered(report, run, stem="privacy-report")
    return path
