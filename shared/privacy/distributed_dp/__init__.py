"""Distributed DP for DP-FedAvg under secure aggregation: clients add discrete noise, the server adds nothing.

Central DP-FedAvg trusts the server with the exact sum of the clipped updates (it adds N(0, (zS)^2) itself). Here
each client rotates, scales and conditionally rounds its clipped update to integers, adds its share of Skellam
(or discrete Gaussian) noise and reduces it modulo 2^b before SecAgg masks it; the unmasked sum is already
private. Pure numpy (no Flower, no torch). References: Kairouz, Liu & Steinke, ICML 2021 (distributed discrete
Gaussian); Agarwal, Kairouz & Liu, NeurIPS 2021 (Skellam); TensorFlow Federated's `DistributedDpSumFactory`.
See docs/distributed-dp.md.

Modules: `samplers` (noise), `rotation` (randomized Hadamard), `rounding` (conditional randomized rounding and the
sensitivities), `encoding` (client encode / server decode in Z_2^b), `accounting` (DpEvents, RDP, epsilon),
`params` (one round's public parameters, JSON), `calibration` (scale and noise from z, t, b or from epsilon).
"""

from fedrec.shared.privacy.distributed_dp.accounting import (
    DistributedDiscreteGaussianDpEvent,
    DistributedDpRdpAccountant,
    SkellamDpEvent,
    ddg_rdp,
    epsilon,
    event_from_json,
    event_to_json,
    skellam_rdp,
)
from fedrec.shared.privacy.distributed_dp.calibration import (
    Calibration,
    CalibrationError,
    calibrate,
    calibrate_for_epsilon,
)
from fedrec.shared.privacy.distributed_dp.encoding import (
    EncodingError,
    WrapAroundError,
    decode_sum,
    encode_integer,
    encode_with_noise,
    error_bound,
    noise_std,
    ring_sum,
)
from fedrec.shared.privacy.distributed_dp.params import DistributedDpParams, ParameterError
from fedrec.shared.privacy.distributed_dp.rounding import RoundingError
from fedrec.shared.privacy.distributed_dp.samplers import discrete_gaussian, secure_generator, skellam

__all__ = [
    "Calibration",
    "CalibrationError",
    "DistributedDiscreteGaussianDpEvent",
    "DistributedDpParams",
    "DistributedDpRdpAccountant",
    "EncodingError",
    "ParameterError",
    "RoundingError",
    "SkellamDpEvent",
    "WrapAroundError",
    "calibrate",
    "calibrate_for_epsilon",
    "ddg_rdp",
    "decode_sum",
    "discrete_gaussian",
    "encode_integer",
    "encode_with_noise",
    "epsilon",
    "error_bound",
    "event_from_json",
    "event_to_json",
    "noise_std",
    "ring_sum",
    "secure_generator",
    "skellam",
    "skellam_rdp",
]
