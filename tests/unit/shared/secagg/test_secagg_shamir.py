"""`shared.secagg.shamir` against pycryptodome's `Shamir`: the same field, the same shares, both directions."""

from __future__ import annotations

import os
import random

import pytest
from Crypto.Protocol.SecretSharing import Shamir, _Element

from fedrec.shared.secagg import crypto, shamir


def test_field_products_and_inverses_match_pycryptodome() -> None:
    rng = random.Random(7)
    for _ in range(200):
        a, b = rng.getrandbits(128), rng.getrandbits(128)
        assert shamir._mul(a, b) == int(_Element(a) * _Element(b))
        assert shamir._mul_public(a, b & 0xFFFF) == int(_Element(a) * _Element(b & 0xFFFF))
        if a:
            assert shamir._mul(a, shamir._inverse(a)) == 1
    with pytest.raises(ValueError, match="zero"):
        shamir._inverse(0)


@pytest.mark.parametrize(("threshold", "holders"), [(1, 1), (2, 2), (2, 3), (3, 4), (6, 10), (8, 15), (12, 23)])
def test_shares_interoperate_with_pycryptodome(threshold: int, holders: int) -> None:
    """Ours combine theirs and theirs combine ours, from any `threshold` of the shares."""
    rng = random.Random(threshold * 100 + holders)
    for _ in range(3):
        chunk = os.urandom(16)
        ours = list(enumerate(shamir.split(chunk, threshold=threshold, holders=holders), start=1))
        pick = rng.sample(ours, threshold)
        assert shamir.combine(pick) == chunk and Shamir.combine(pick) == chunk
        assert shamir.combine(rng.sample(Shamir.split(threshold, holders, chunk), threshold)) == chunk


def test_fewer_shares_than_the_threshold_give_another_value() -> None:
    chunk = os.urandom(16)
    shares = list(enumerate(shamir.split(chunk, threshold=4, holders=6), start=1))
    assert shamir.combine(shares[:3]) != chunk
    with pytest.raises(ValueError, match="duplicate"):
        shamir.combine([shares[0], shares[0]])


def test_a_32_byte_secret_round_trips_through_crypto() -> None:
    secret = os.urandom(crypto.SECRET_BYTES)
    shares = crypto.split_secret(secret, threshold=5, holders=9)
    assert len(shares) == 9 and all(len(s) == crypto.SHARE_BYTES for s in shares)
    assert crypto.combine_secret(random.Random(1).sample(shares, 5)) == secret
