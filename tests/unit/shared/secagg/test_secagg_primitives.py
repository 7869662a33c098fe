"""The building blocks: ChaCha20 mask expansion, Shamir sharing, sealed shares, the k-regular graph."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from fedrec.shared.secagg import crypto, graph, prg
from fedrec.shared.secagg.errors import SecAggProtocolError

SESSION = b"s" * 16


def test_masks_are_deterministic_per_key_distinct_across_keys_and_uniform() -> None:
    """The same derived key gives the same words; another label or session another stream; words are uniform."""
    secret = bytes(range(32))
    k1 = prg.derive_key(secret, session=SESSION, label=b"a")
    assert np.array_equal(prg.expand(k1, 1000, 32), prg.expand(k1, 1000, 32))
    assert k1 != prg.derive_key(secret, session=SESSION, label=b"b")
    assert k1 != prg.derive_key(secret, session=b"t" * 16, label=b"a")
    words = prg.expand(k1, 1 << 15, 64)
    assert words.dtype == np.uint64
    assert stats.chisquare(np.bincount(words.view(np.uint8), minlength=256)).pvalue > 1e-6
    with pytest.raises(ValueError, match=r">= 128 bits"):
        prg.derive_key(b"short", session=SESSION, label=b"a")


def test_pairwise_keys_agree_at_both_ends() -> None:
    """X25519 from either side, with the pair label in a fixed order, gives the same mask key."""
    a, b = crypto.new_private_key(), crypto.new_private_key()
    ka = prg.derive_key(crypto.agree(a, crypto.public_key(b)), session=SESSION, label=crypto.pair_label(b"m", 3, 9))
    kb = prg.derive_key(crypto.agree(b, crypto.public_key(a)), session=SESSION, label=crypto.pair_label(b"m", 9, 3))
    assert ka == kb
    with pytest.raises(SecAggProtocolError, match=r"unusable peer public key"):
        crypto.agree(a, bytes(32))  # a low-order point: all-zero shared secret


@settings(max_examples=25, deadline=None, database=None)
@given(holders=st.integers(2, 12), data=st.data())
def test_any_t_shares_reconstruct_and_fewer_do_not(holders, data) -> None:
    """Any t of the m shares give the secret back; t - 1 shares give something else."""
    t = data.draw(st.integers(2, holders))
    secret = bytes(data.draw(st.lists(st.integers(0, 255), min_size=32, max_size=32)))
    shares = crypto.split_secret(secret, threshold=t, holders=holders)
    picked = data.draw(st.permutations(shares))
    assert crypto.combine_secret(list(picked[:t])) == secret
    assert crypto.combine_secret(list(picked[:t - 1])) != secret or t == 1


def test_sealed_shares_open_only_for_the_right_pair_and_round() -> None:
    """A ciphertext opens for its receiver; replayed to another receiver, index or round it fails to authenticate."""
    a, b, c = crypto.new_private_key(), crypto.new_private_key(), crypto.new_private_key()
    ct = crypto.seal(a, crypto.public_key(b), session=SESSION, sender=1, receiver=2, plaintext=b"shares")
    opened = crypto.open_sealed(b, crypto.public_key(a), session=SESSION, sender=1, receiver=2, ciphertext=ct)
    assert opened == b"shares"
    for private, sender, receiver, session in ((c, 1, 2, SESSION), (b, 1, 3, SESSION), (b, 1, 2, b"x" * 16)):
        with pytest.raises(SecAggProtocolError, match=r"fail authentication"):
            crypto.open_sealed(private, crypto.public_key(a), session=session, sender=sender, receiver=receiver,
                               ciphertext=ct)


@pytest.mark.parametrize(("n", "requested", "expected"), [(2, 0, 1), (9, 0, 8), (10, 0, 9), (40, 0, 14), (41, 0, 14),
                                                           (41, 5, 6), (300, 0, 20)])
def test_graph_is_k_regular_and_survives_k_minus_1_removals(n: int, requested: int, expected: int) -> None:
    """H(k, n) on a random labelling: every node has k neighbours, and removing k - 1 random nodes leaves it
    connected; k = n - 1 up to 10 clients, O(log n) beyond, even when n is odd."""
    k = graph.effective_degree(n, requested)
    g = graph.harary(list(range(n)), k, random.Random(n))
    assert all(len(nb) == k and v not in nb for v, nb in g.items())
    assert all(v in g[w] for v in g for w in g[v])  # symmetric
    assert k == expected  # requested (odd k with odd n rounds up) or 2 ceil(log2 n) + 2, at most n - 1
    rng = random.Random(1)
    for _ in range(5):
        gone = set(rng.sample(range(n), k - 1))
        assert graph.is_connected(g, set(range(n)) - gone)


@pytest.mark.parametrize(("degree", "fraction", "t"), [(1, 0.5, 2), (3, 0.5, 3), (9, 0.5, 6), (9, 0.8, 8),
                                                       (14, 0.5, 8), (14, 1.0, 15)])
def test_threshold_is_a_strict_majority_of_the_holders(degree: int, fraction: float, t: int) -> None:
    """t = max(floor(m/2) + 1, ceil(f m)) of the m = k + 1 holders, never below 2."""
    assert graph.threshold(degree, fraction) == t
    assert 2 * t > degree + 1
