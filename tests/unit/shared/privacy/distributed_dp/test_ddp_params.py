"""One round's public parameters: exact JSON round trip, and a constructor that names the bad field and value."""

from __future__ import annotations

import json
import math

import pytest

from fedrec.shared.privacy.distributed_dp import accounting, rounding, samplers
from fedrec.shared.privacy.distributed_dp.params import MAX_SCALED_CLIP, DistributedDpParams, ParameterError

GOOD = dict(mechanism="skellam", clip_norm=0.1 + 0.2, dim=221_244, padded_dim=262_144, scale=207243.02873658767,
            ring_bits=32, client_variance=8589934591.991411, min_survivors=5, max_clients=10,
            rotation_seed=2**128 - 1, beta=math.exp(-0.5))


def test_json_round_trip_is_exact() -> None:
    p = DistributedDpParams(**GOOD)
    text = json.dumps(p.to_json())
    back = DistributedDpParams.from_json(json.loads(text))
    assert back == p
    assert json.dumps(back.to_json()) == text
    assert back.l2_sensitivity == p.l2_sensitivity and back.dp_event() == p.dp_event()


def test_derived_quantities() -> None:
    p = DistributedDpParams(**GOOD)
    assert p.scaled_clip == p.scale * p.clip_norm
    assert p.l2_sensitivity == rounding.l2_bound(p.scaled_clip, p.padded_dim, p.beta)
    assert p.l1_sensitivity == rounding.l1_bound(p.l2_sensitivity, p.padded_dim)
    assert p.accounted_variance == 5 * p.client_variance
    assert p.envelope == 2**30
    assert p.dp_event() == accounting.SkellamDpEvent(p.l1_sensitivity, p.l2_sensitivity, p.accounted_variance)
    ddg = DistributedDpParams(**{**GOOD, "mechanism": "dgauss"}).dp_event()
    assert ddg == accounting.DistributedDiscreteGaussianDpEvent(p.l1_sensitivity, p.l2_sensitivity,
                                                                p.client_variance, 5, 262_144)
    with pytest.raises(ParameterError, match="client_variance"):
        DistributedDpParams(**{**GOOD, "client_variance": 0.0}).dp_event()


@pytest.mark.parametrize(("field", "value"), [
    ("mechanism", "gaussian"),
    ("clip_norm", 0.0), ("clip_norm", -1.0), ("clip_norm", math.nan), ("clip_norm", "1.0"), ("clip_norm", True),
    ("dim", 0), ("dim", 1.5), ("dim", True),
    ("padded_dim", 221_244), ("padded_dim", 524_288),
    ("scale", 0.0), ("scale", math.inf), ("scale", MAX_SCALED_CLIP * 10),
    ("ring_bits", 16), ("ring_bits", True),
    ("client_variance", -1.0), ("client_variance", math.inf), ("client_variance", samplers.MAX_VARIANCE * 2),
    ("min_survivors", 0), ("min_survivors", 2.5),
    ("max_clients", 4), ("max_clients", 2.0),
    ("rotation_seed", -1), ("rotation_seed", 2**128), ("rotation_seed", 1.0),
    ("beta", 1.0), ("beta", -0.1),
])
def test_bad_values_name_the_field_and_the_value(field: str, value: object) -> None:
    with pytest.raises(ParameterError) as info:
        DistributedDpParams(**{**GOOD, field: value})
    message = str(info.value)
    assert field in message.split(":")[0] or message.startswith(field)
    if field != "scale":  # scale's message shows the product scale * clip_norm
        assert repr(value) in message or str(value) in message


def test_from_json_refuses_malformed_objects() -> None:
    good = DistributedDpParams(**GOOD).to_json()
    with pytest.raises(ParameterError, match="missing member\\(s\\) \\['beta'\\]"):
        DistributedDpParams.from_json({k: v for k, v in good.items() if k != "beta"})
    with pytest.raises(ParameterError, match="unknown member\\(s\\) \\['gamma'\\]"):
        DistributedDpParams.from_json({**good, "gamma": 1.0})
    with pytest.raises(ParameterError, match="version"):
        DistributedDpParams.from_json({**good, "version": 2})
    with pytest.raises(ParameterError, match="dim: expected an integer, found 221244.0"):
        DistributedDpParams.from_json({**good, "dim": 221244.0})
    with pytest.raises(ParameterError, match="JSON object"):
        DistributedDpParams.from_json([good])
