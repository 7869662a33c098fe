"""Write the run's signed epsilon report (JSON) and its human renderings (Markdown, HTML, plot).

The user-level section comes from the server's DP-FedAvg ledger; the record-level section only summarises the
epsilons devices reported (they are self-reported metrics, sent in the clear; each device's own signed report
is the authoritative record-level statement).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fedrec.server.release import RNG_DESCRIPTION, DpFedAvgRelease
from fedrec.shared.config import RunConfig
from fedrec.shared.privacy.distributed_entries import entry_components
from fedrec.shared.privacy.keys import load_or_create_private_key, save_public_key
from fedrec.shared.privacy.report import (
    GuaranteeInputs,
    Mechanism,
    Sampling,
    Scope,
    build_run_report,
    sign_report,
    write_report,
)
from fedrec.shared.privacy.report.inputs import DEFAULT_NOT_COVERED, DIAGNOSTICS_NOT_COVERED, ReleaseInputs
from fedrec.shared.privacy.report.render import write_rendered

REPORT = "privacy-report.json"


def _span(values: list[int]) -> str:
    return "n/a" if not values else (str(values[0]) if len(values) == 1 else f"{values[0]}..{values[-1]}")


def secure_aggregation_scope(cfg: RunConfig,
                             secure_rounds: Sequence[Mapping[str, Any]]) -> tuple[str, int | None, str]:
    """(protocol and parameters, colluding clients tolerated, trust notes) of a run with secure aggregation.

    `secure_rounds` are the round rows with the secure-aggregation figures (`secagg_*`); t and k can differ per
    round (they follow the number of clients that sent keys), so the report states their range and the
    smallest t: fewer than t colluding clients learn nothing beyond the sum in every round.
    """
    distributed = cfg.user_dp.enabled and cfg.user_dp.noise == "distributed"
    wraps = [float(r["ddp_log10_wrap_probability"]) for r in secure_rounds
             if r.get("ddp_log10_wrap_probability") is not None]
    done = [r for r in secure_rounds if "secagg_threshold" in r]
    ks = sorted({int(r["secagg_neighbours"]) for r in done})
    ts = sorted({int(r["secagg_threshold"]) for r in done})
    aborted = [int(r["round"]) for r in secure_rounds if str(r.get("status", "")).startswith("aborted")]
    quant = max((float(r["secagg_quantization_error_bound"]) for r in secure_rounds
                 if "secagg_quantization_error_bound" in r), default=None)
    noise = cfg.user_dp.noise_multiplier * cfg.user_dp.clip_norm
    protocol = (
        f"fedrec SecAgg+ (Bell et al. 2020 over Bonawitz et al. 2017): X25519 key agreement, HKDF-SHA256, "
        f"ChaCha20 masks from 256-bit secrets, AES-256-GCM share transport, Shamir sharing over GF(2^128); "
        f"k-regular Harary graph on a random labelling, k = {_span(ks)} neighbours "
        f"(setting {cfg.secagg.neighbours or 'auto'}), threshold t = {_span(ts)} of the k + 1 share holders "
        f"(a strict majority; fraction {cfg.secagg.threshold_fraction:g}); each client clips its whole delta to "
        f"S = {cfg.user_dp.clip_norm:g} and encodes it in Z_2^{cfg.secagg.ring_bits} "
        + ("after a randomized Hadamard rotation, scaling by gamma, conditional randomized rounding to the integer "
           "L2 bound Delta_2 and its own Skellam noise share (probability of a modular wrap-around at most "
           + (f"10^{max(wraps):.4g}" if wraps else "1e-9") + " per round by the calibration's Chernoff bound, "
           "detected on decoding)" if distributed else "(no per-coordinate clipping, no overflow by construction)")
        + ((f"; the clients' randomized rounding moves the decoded sum by at most {quant:.3g} in L2 (a deterministic "
            "bound; the rounding is unbiased below the clip norm)" if distributed else
            f"; quantization error of the sum <= {quant:.3g} per coordinate"
            + (f" against noise std z*S = {noise:.3g}" if cfg.user_dp.enabled else "")) if quant is not None else "")
        + f"; {len(aborted)} round(s) aborted with fewer than t survivors, nothing released: {aborted or 'none'}")
    notes = (
        "secure aggregation assumes an honest-but-curious server (it runs the protocol as written, including the "
        "random graph and the refusal to unmask a disconnected survivor set, but may inspect everything it "
        "receives) and fewer than t colluding clients; public keys are relayed by the server without "
        "authentication, so an actively malicious server is not covered. The server sees masked uploads and "
        + ("the sum of the survivors' clipped updates with their Skellam noise shares in it (user_dp.noise = "
           "distributed): the server adds no noise and never sees a noiseless sum, so the DP guarantee holds "
           "against the server too, provided at least t = ceil(survivor_fraction x asked) honest clients added "
           "their shares (the server unmasks no sum with fewer survivors) and the server runs the protocol as "
           "written" if distributed else "the exact sum of the survivors' clipped deltas")
        + (" before it adds the Gaussian noise: the DP guarantee is central, it protects against everyone who "
           "sees the released adapters, not the sum against the server" if cfg.user_dp.enabled and not distributed
           else "")
        + ". The server cannot check the clipping bound of a masked upload (a malicious client could send a "
        "larger one).")
    return protocol, (ts[0] - 1 if ts else None), notes


def _central_z(dp: DpFedAvgRelease) -> float:
    """The adapter releases' central noise multiplier as the ledger records it (sqrt(t mu) / (gamma S), which the
    calibration makes z up to a relative 1e-12); `user_dp.noise_multiplier` if no adapter round released."""
    zs = [entry_components(e)[0].noise_multiplier for e in dp.ledger if e.metadata.get("release") == "adapter"]
    return zs[-1] if zs else dp.noise_multiplier


def _as_recorded(r: ReleaseInputs, dp: DpFedAvgRelease) -> ReleaseInputs:
    """A round-0 release declared with the central z its ledger entry records (distributed DP, see `_central_z`)."""
    zs = [entry_components(e)[0].noise_multiplier for e in dp.ledger if e.metadata.get("release") == r.name]
    return dataclasses.replace(r, noise_multiplier=zs[-1]) if zs else r


def write_run_report(run: Path, cfg: RunConfig, dp: DpFedAvgRelease | None, *, rounds_run: int,
                     record_epsilons: list[float], rounds_without_release: Sequence[int] = (),
                     secure_rounds: Sequence[Mapping[str, Any]] = (),
                     empirical_audit: Mapping[str, Any] | None = None,
                     releases: tuple[ReleaseInputs, ...] = ()) -> Path:
    """Build, sign and write `privacy-report.json` (+ .md/.html/.png) into the run directory.

    `rounds_without_release`: rounds that released nothing (secure aggregation aborted); `secure_rounds`: the
    round rows of a run with secure aggregation (their `secagg_*` figures go into the trust model).
    """
    notes = ("central DP: the server sees each client's clipped update in the clear (no secure aggregation) "
             "and is trusted to add the noise; the guarantee holds against everyone who sees the released "
             "global adapters") if dp is not None else "no user-level mechanism in this run"
    protocol, colluding = None, None
    if cfg.secagg.enabled:
        protocol, colluding, notes = secure_aggregation_scope(cfg, secure_rounds)
        if dp is None:
            notes += " No user-level mechanism in this run."
    dp_setting = "central (trusted server adds the noise)" if dp is not None else "local (on device)"
    distributed = dp is not None and cfg.user_dp.noise == "distributed"
    if dp is not None and cfg.secagg.enabled:
        dp_setting = ("distributed DP-FedAvg: each client adds a Skellam noise share before secure aggregation "
                      "(SecAgg+); the server adds none" if distributed else
                      "central DP-FedAvg with server-side noise after secure aggregation (SecAgg+)")
    not_covered = DEFAULT_NOT_COVERED + ((DIAGNOSTICS_NOT_COVERED,) if cfg.run.dp_diagnostics else ())
    scope = Scope(dp_setting=dp_setting, secure_aggregation=protocol, colluding_clients_max=colluding,
                  trust_notes=notes, not_covered=not_covered)
    user_level = None
    if dp is not None and len(dp.ledger):  # an empty ledger (every round aborted) released nothing
        population = dp.population
        sampling = (Sampling.no_amplification(population=population,
                                              expected_sample_size=cfg.run.clients_sampled(population),
                                              evidence="distributed noise: the server picks the clients and "
                                                       "knows who took part, so no amplification by sampling is "
                                                       "claimed (clients may still be Poisson-sampled)")
                    if distributed else Sampling.poisson(population=population, sample_rate=dp.sample_rate,
                                     evidence="server-side Poisson sampling over the N connected clients, secret "
                                              "seed; a sampled client that fails is a dropout, never replaced")
                    if dp.poisson else
                    Sampling.no_amplification(population=population,
                                              expected_sample_size=cfg.run.clients_sampled(population),
                                              evidence="full participation: every client is asked in every round "
                                                       "(a fixed-size cohort smaller than N is refused under "
                                                       "user-level DP); no amplification claimed"))
        user_level = GuaranteeInputs(
            ledger=dp.ledger,
            mechanism=(Mechanism.distributed_dp_fedavg(noise_multiplier=_central_z(dp),
                                                       clip_norm=cfg.user_dp.clip_norm) if distributed else
                       Mechanism.dp_fedavg(noise_multiplier=cfg.user_dp.noise_multiplier,
                                           clip_norm=cfg.user_dp.clip_norm, rng=RNG_DESCRIPTION)),
            **({"accountant": dp.accountant, "cross_check": ()} if distributed else {}),
            sampling=sampling, delta=dp.delta, rounds_run=rounds_run,
            rounds_without_release=tuple(rounds_without_release),
            releases=tuple(_as_recorded(r, dp) if distributed else r for r in releases if r.noise_multiplier > 0),
        )
    report = build_run_report(
        run_id=run.name, scope=scope, user_level=user_level,
        record_level_epsilons=record_epsilons,
        record_level_delta=cfg.record_dp.delta if cfg.record_dp.enabled and record_epsilons else None,
        record_level_accountant=(f"opacus-{cfg.record_dp.accountant}" if cfg.record_dp.enabled and record_epsilons
                                 else None),
        empirical_audit=empirical_audit,  # server.audit: measured lower bounds beside the claimed epsilons
    )
    key_path = Path(cfg.run.server_key) if cfg.run.server_key else run.parent / "server-ed25519.pem"
    key = load_or_create_private_key(key_path)
    save_public_key(key, run / "server-ed25519.pub")
    signed = sign_report(report, key)
    path = write_report(signed, run / REPORT)
    write_rendered(signed, run, stem="privacy-report")  # rendered from the signed report: it names the signer
    return path
