"""What a report's caller states: the scope and trust model, the mechanism, the sampling, and per guarantee the
ledger with everything needed to state it. Epsilon is not among them: `build` computes it from the ledger.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from fedrec.shared.io import package_version
from fedrec.shared.privacy.errors import ReportError
from fedrec.shared.privacy.ledger import PrivacyLedger

# What each report type covers unless the caller says otherwise; `not_covered` is the honest list of what
# leaves the device or the server outside the DP mechanism.
RUN_OUTPUTS_COVERED = ("every round's global adapter (each released aggregate, including intermediate ones)",
                       "every statistic of the release phase, if the run has one (released.safetensors and what the "
                       "devices score with: the noisy sums and their post-processing)")
DEVICE_OUTPUTS_COVERED = ("every adapter update this device sent to the server, in every round it trained in",
                          "every release-phase contribution this device sent with its own noise, if any (its 'local "
                          "release' entries)")
# fedrec under any privacy setting: devices send no per-user metric, list or telemetry in the clear; what the
# server and the published run directory still learn is listed here (docs/privacy-reports.md, per setting).
DEFAULT_NOT_COVERED = (
    "which devices were asked, trained, declined (record-level budget spent) or failed (an error code, never a "
    "path or a value), per round: seen by the server, kept server-private; the published run directory holds "
    "per-round counts only",
    "each training device's cumulative record-level epsilon (with record-level DP): seen by the server, published "
    "as min/median/p90/max across devices",
    "federated evaluation: the sums of hits, NDCG and per-item top-10 counts over the evaluated devices, which the "
    "server sees only as their total (secure aggregation) and publishes as means, without DP noise",
    "message sizes and arrival times",
    "the public item catalog (artists, tags) and the public base model",
    "hyper-parameter tuning and any run not recorded in this ledger",
)
# Added when a simulation sets run.dp_diagnostics (deployed devices never send these).
DIAGNOSTICS_NOT_COVERED = ("per device, in the clear (run.dp_diagnostics, a simulation-only setting): loss, example "
                           "and token counts, training time, step count and peak memory")


@dataclass(frozen=True, kw_only=True)
class Scope:
    """The DP setting and trust model: who is trusted with what, and which outputs the guarantee covers.

    `server` is the server's assumed behaviour ("honest-but-curious": runs the protocol, adds the noise, but may
    look at what it sees). `secure_aggregation` names the protocol if the server only sees sums, else None.
    `outputs_covered` defaults per report type; `not_covered` lists what leaves outside the mechanism.
    """

    dp_setting: str
    server: str = "honest-but-curious"
    secure_aggregation: str | None = None
    colluding_clients_max: int | None = None
    trust_notes: str = ""
    outputs_covered: tuple[str, ...] | None = None
    not_covered: tuple[str, ...] = DEFAULT_NOT_COVERED

    def to_json(self, report_type: str) -> dict[str, Any]:
        covered = self.outputs_covered
        if covered is None:
            covered = RUN_OUTPUTS_COVERED if report_type == "run" else DEVICE_OUTPUTS_COVERED
        return {"dp_setting": self.dp_setting,
                "trust_model": {"server": self.server, "secure_aggregation": self.secure_aggregation,
                                "colluding_clients_max": self.colluding_clients_max, "notes": self.trust_notes},
                "outputs_covered": list(covered), "not_covered": list(self.not_covered)}


@dataclass(frozen=True, kw_only=True)
class Mechanism:
    """The noise mechanism as configured: the verifier checks every ledger event against `noise_multiplier`.

    `rng` says where the noise comes from (for example "torch.Generator seeded from secrets; not a CSPRNG, no
    floating-point hardening"), because DP proofs assume ideal Gaussian samples.
    """

    name: str
    noise_multiplier: float
    clip_norm: float
    clipping: str
    rng: str
    noise_distribution: str = "gaussian"
    aggregation_weights: str | None = None

    @classmethod
    def dp_fedavg(cls, *, noise_multiplier: float, clip_norm: float, rng: str,
                  aggregation_weights: str = "equal weights, fixed denominator (expected clients per round)",
                  clipping: str = "flat L2 over the whole adapter delta, fixed norm") -> Mechanism:
        """DP-FedAvg: Gaussian noise of std z * S added to the sum of updates each clipped to S."""
        return cls(name="DP-FedAvg (Gaussian noise on the sum of clipped updates)", noise_multiplier=noise_multiplier,
                   clip_norm=clip_norm, clipping=clipping, rng=rng, aggregation_weights=aggregation_weights)

    @classmethod
    def distributed_dp_fedavg(cls, *, noise_multiplier: float, clip_norm: float,
                              aggregation_weights: str = "equal weights, fixed denominator (expected clients per "
                                                         "round)") -> Mechanism:
        """Distributed DP-FedAvg: each client clips to S, rotates, scales, rounds and adds a Skellam noise share
        before secure aggregation; the unmasked sum carries noise of the central z S. The accountant reads the
        ledger's Skellam events (integer units), not this z."""
        return cls(name="distributed DP-FedAvg (Skellam noise shares under secure aggregation)",
                   noise_multiplier=noise_multiplier, clip_norm=clip_norm,
                   clipping="flat L2 over the whole update, then randomized Hadamard rotation, scaling and "
                            "conditional randomized rounding to the integer L2 bound Delta_2",
                   rng="each client: numpy PCG64 seeded from 128 bits of the OS CSPRNG (`secrets`), fresh per "
                       "round, never sent; Poisson sampling in float64 (not bit-exact)",
                   noise_distribution="skellam", aggregation_weights=aggregation_weights)

    @classmethod
    def dp_sgd(cls, *, noise_multiplier: float, max_grad_norm: float, rng: str,
               clipping: str = "per-example flat L2 over all trainable parameters, fixed norm") -> Mechanism:
        """Opacus DP-SGD: per-example gradients clipped to C, Gaussian noise of std z * C on their sum."""
        version = package_version("opacus")
        return cls(name=f"DP-SGD (Opacus {version})", noise_multiplier=noise_multiplier, clip_norm=max_grad_norm,
                   clipping=clipping, rng=rng, aggregation_weights=None)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "noise_multiplier": float(self.noise_multiplier),
                "clip_norm": float(self.clip_norm), "clipping": self.clipping,
                "noise_distribution": self.noise_distribution, "aggregation_weights": self.aggregation_weights,
                "rng": self.rng}


@dataclass(frozen=True, kw_only=True)
class Sampling:
    """How the units taking part in each release were chosen, out of a population of `population`.

    User-level: clients per round out of N users. Record-level: example slots per DP-SGD step out of the device's
    K slots. Only Poisson sampling from a fixed, known population earns amplification; otherwise use
    `no_amplification` and account each release as a plain Gaussian.
    """

    method: Literal["poisson", "none"]
    population: int
    expected_sample_size: float | None
    sample_rate: float | None
    evidence: str = ""

    @classmethod
    def poisson(cls, *, population: int, sample_rate: float | None = None,
                expected_sample_size: float | None = None, evidence: str = "") -> Sampling:
        """Poisson sampling; give `sample_rate` q or `expected_sample_size` (q * population), not both."""
        if (sample_rate is None) == (expected_sample_size is None):
            raise ReportError("Sampling.poisson: give exactly one of sample_rate and expected_sample_size")
        if sample_rate is None:
            sample_rate = float(expected_sample_size) / population  # type: ignore[arg-type]
        else:
            expected_sample_size = float(sample_rate) * population
        return cls(method="poisson", population=int(population), expected_sample_size=float(expected_sample_size),
                   sample_rate=float(sample_rate), evidence=evidence)

    @classmethod
    def no_amplification(cls, *, population: int, expected_sample_size: float | None = None,
                         evidence: str = "") -> Sampling:
        """Sampling not controlled or not provably Poisson: no amplification is claimed."""
        return cls(method="none", population=int(population),
                   expected_sample_size=None if expected_sample_size is None else float(expected_sample_size),
                   sample_rate=None, evidence=evidence)

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "population": self.population,
                "expected_sample_size": self.expected_sample_size, "sample_rate": self.sample_rate,
                "evidence": self.evidence}


@dataclass(frozen=True, kw_only=True)
class ReleaseInputs:
    """One statistic released in round 0 (`fedrec.server.releases`): every user asked, no amplification.

    The ledger entries whose metadata name this release (`release`) must use exactly this noise multiplier, this
    sensitivity (metadata `clip_norm`) and no sampling; the verifier checks it.
    """

    name: str
    noise_multiplier: float
    sensitivity: float
    description: str
    participation: str = "every user's device is asked (full participation: no amplification by sampling)"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "noise_multiplier": float(self.noise_multiplier),
                "sensitivity": float(self.sensitivity), "description": self.description,
                "participation": self.participation}


@dataclass(frozen=True, kw_only=True)
class GuaranteeInputs:
    """Everything needed to state one guarantee; epsilon itself is computed from `ledger`.

    `rounds_run`: user-level, the number of server rounds run (numbered 1..rounds_run); record-level, the
    number of rounds this device trained in. `rounds_without_release` (user-level): rounds that released no
    aggregate. `accountant` is the primary (reported, budgeted) accountant; `cross_check` the second figures.
    """

    ledger: PrivacyLedger
    mechanism: Mechanism
    sampling: Sampling
    delta: float
    rounds_run: int
    rounds_without_release: tuple[int, ...] = ()
    failed_rounds_policy: str | None = None
    accountant: str = "pld"
    accountant_settings: Mapping[str, Any] | None = None
    cross_check: tuple[str, ...] = ("rdp",)
    unit_description: str | None = None
    contribution_bound: str | None = None
    releases: tuple[ReleaseInputs, ...] = ()  # round-0 statistics beside the main mechanism (user-level)
