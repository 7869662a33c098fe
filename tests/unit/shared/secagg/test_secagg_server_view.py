"""What the server sees in a round with dropouts: masked uploads indistinguishable from uniform, uncorrelated with
the deltas they hide (even after the server removes the self masks it legitimately learns), shares that never
unmask a live client, and the exact sum."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from fedrec.shared.privacy.mechanisms import clip_update
from fedrec.shared.secagg import crypto
from fedrec.shared.secagg.encoding import FixedPointEncoding
from fedrec.shared.secagg.masks import self_mask

N, D = 8, 4096
P_UNIFORM = 1e-6  # chi-square: a uniform upload fails with probability 1e-6 per test; a plaintext one passes never


@pytest.fixture(scope="module")
def seen(secagg_round):
    """A round of 8 clients with realistic encoded deltas; client 102 drops before its masked input, 105 before
    unmasking. Returns (result, plaintext encodings, encoding)."""
    enc = FixedPointEncoding(clip_norm=1.0, max_clients=N, ring_bits=32)
    rng = np.random.default_rng(0)
    plain = {}
    for c in range(100, 100 + N):
        delta = {"w": (rng.normal(size=D) * 0.05).astype(np.float32)}  # norm ~3.2: clipped like a real update
        clipped, _ = clip_update(delta, clip_norm=enc.input_clip_norm(D))
        plain[c] = enc.encode(clipped["w"])
    result = secagg_round(plain, drop={"masked-input": {102}, "unmask": {105}})
    return result, plain, enc


def signed(words: np.ndarray) -> np.ndarray:
    return words.view(np.int32).astype(np.float64)


def uniform_pvalue(words: np.ndarray) -> float:
    """Chi-square p-value of the byte histogram and of the top-byte histogram (the smaller)."""
    all_bytes = np.bincount(words.view(np.uint8), minlength=256)
    top = np.bincount((words >> 24).astype(np.int64), minlength=256)
    return min(stats.chisquare(all_bytes).pvalue, stats.chisquare(top).pvalue)


def test_sum_is_exact_and_decodes_to_the_clipped_deltas(seen) -> None:
    """The ring sum is the plaintext sum of the 7 clients whose masked input arrived (105 included: its self
    mask is rebuilt from its neighbours' shares)."""
    result, plain, enc = seen
    assert result.survivors == [c for c in plain if c != 102]
    expected = np.zeros(D, dtype=np.uint32)
    for c in result.survivors:
        expected = np.add(expected, plain[c], dtype=np.uint32)
    assert np.array_equal(result.total, expected)
    decoded = enc.decode_sum(result.total, len(result.survivors))
    assert np.allclose(decoded, sum(signed(plain[c]) for c in result.survivors) / enc.scale, atol=1e-12)


def test_masked_uploads_are_indistinguishable_from_uniform(seen) -> None:
    """Every masked upload passes a chi-square uniformity test; the plaintext encodings fail it badly."""
    result, plain, _ = seen
    uploads = result.view["masked-input"]
    assert sorted(uploads) == result.survivors
    for c, reply in uploads.items():
        assert uniform_pvalue(reply.masked) > P_UNIFORM, c
        assert uniform_pvalue(plain[c]) < 1e-12  # the test has power: what is hidden is far from uniform


def test_masked_uploads_do_not_correlate_with_their_deltas(seen) -> None:
    """Pearson correlation of each upload with its plaintext is ~0 (|r| < 6/sqrt(d)), also after the server
    removes the self mask it reconstructs: the pairwise masks still hide the delta."""
    result, plain, _ = seen
    server = result.server
    bound = 6 / np.sqrt(D)
    for c, reply in result.view["masked-input"].items():
        j = server.index[c]
        shares = [r.self_mask_shares[j] for r in result.view["unmask"].values() if j in r.self_mask_shares]
        seed = crypto.combine_secret(shares[:server.threshold])
        unmasked_self = np.subtract(reply.masked, self_mask(seed, session=server.session, index=j, words=D,
                                                            ring_bits=32), dtype=np.uint32)
        for view in (reply.masked, unmasked_self):
            r = np.corrcoef(view.astype(np.float64), signed(plain[c]))[0, 1]
            assert abs(r) < bound, (c, r)
        assert uniform_pvalue(unmasked_self) > P_UNIFORM


def test_the_server_never_gets_both_secrets_of_a_client(seen) -> None:
    """Over everything received, each client's self-mask seed and mask key are never both asked for: key shares
    only of the dropped client (102), self-mask shares only of the survivors; ciphertexts carry no plaintext."""
    result, plain, _ = seen
    server = result.server
    key_of, seed_of = set(), set()
    for reply in result.view["unmask"].values():
        key_of |= {server.ids[i] for i in reply.key_shares}
        seed_of |= {server.ids[i] for i in reply.self_mask_shares}
    assert key_of == {102} and seed_of == set(result.survivors) and not key_of & seed_of
    for reply in result.view["share-keys"].values():
        for ct in reply.ciphertexts.values():
            assert len(ct) == 12 + 2 * crypto.SHARE_BYTES + 16  # nonce + shares + GCM tag, nothing else
