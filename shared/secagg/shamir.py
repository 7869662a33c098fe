"""Shamir secret sharing of 16-byte chunks over GF(2^128), share-compatible with pycryptodome's `Shamir`.

Why not pycryptodome's `Shamir.split`/`combine` directly (as before): their field multiplication builds Python
strings for every bit (`int(bin(...) * 128, 2)`), about 0.1-0.2 ms a product, and `combine` spends 2t^2 of them
plus t inversions on the Lagrange coefficients, which depend only on the public x-coordinates. Rebuilding the
self-mask seeds of 100 survivors took seconds of the server's round (simulations/results/secure_aggregation.md).
Here a product takes 32 steps of 4 bits on Python ints, the coefficients at x = 0 are computed once per
set of x-coordinates (cached: both chunks of a secret, and every secret held by the same holders, share them),
and a share evaluation multiplies by the small public x only.

Same field and encoding as pycryptodome (`Crypto.Protocol.SecretSharing._Element`): the irreducible polynomial
1 + x + x^2 + x^7 + x^128, a 16-byte big-endian string whose least significant bit is the constant coefficient,
share i evaluated at x = i (1-based), no "ssss" term. Shares made here combine with `Shamir.combine` and shares
made by `Shamir.split` combine here (tests/unit/shared/secagg/test_secagg_shamir.py).

Constant time: not claimed. Python integers are not constant time (neither is pycryptodome's pure-Python field,
whatever its masks intend), and `_mul` indexes a table by 4 bits of an operand (a cache-timing channel in native
code). Side channels are outside the threat model (docs/secure-aggregation.md).
"""

from __future__ import annotations

import functools
import os

CHUNK_BYTES = 16
_IRR = (1 << 128) | 0b10000111  # x^128 + x^7 + x^2 + x + 1


_MASK = (1 << 128) - 1
#: x^128 * t reduced, for the 4 bits t that a 4-bit shift pushes past x^127 (x^128 = x^7 + x^2 + x + 1)
_REDUCE = tuple(functools.reduce(int.__xor__, (0b10000111 << i for i in range(4) if t >> i & 1), 0)
                for t in range(16))


def _mul(a: int, b: int) -> int:
    """a * b in GF(2^128), 4 bits of b at a time (32 steps, a table of the 16 multiples of a)."""
    table = [0] * 16
    for i in range(4):
        table[1 << i] = a
        a <<= 1
        a ^= _IRR & -(a >> 128)
    for w in range(3, 16):
        if w & (w - 1):  # not a power of two: the sum of its lowest bit's entry and the rest
            table[w] = table[w & -w] ^ table[w & (w - 1)]
    z = 0
    for shift in range(124, -4, -4):
        z <<= 4
        z = (z & _MASK) ^ _REDUCE[z >> 128] ^ table[(b >> shift) & 15]
    return z


def _mul_public(a: int, x: int) -> int:
    """a * x for a small public x (a share's index): as many steps as x has bits."""
    z = 0
    while x:
        z ^= a & -(x & 1)
        a <<= 1
        a ^= _IRR & -(a >> 128)
        x >>= 1
    return z


def _clmul(a: int, b: int) -> int:
    """a * b as polynomials over GF(2), unreduced (public values only)."""
    z = 0
    while b:
        if b & 1:
            z ^= a
        a <<= 1
        b >>= 1
    return z


def _divmod(a: int, b: int) -> tuple[int, int]:
    """Quotient and remainder of polynomials over GF(2) (public values only)."""
    q, width = 0, b.bit_length()
    while a.bit_length() >= width:
        shift = a.bit_length() - width
        q ^= 1 << shift
        a ^= b << shift
    return q, a


def _inverse(a: int) -> int:
    """1 / a by the extended Euclidean algorithm over GF(2)[x] (public values only: Lagrange denominators)."""
    if a == 0:
        raise ValueError("inversion of zero")
    r0, r1, s0, s1 = a, _IRR, 1, 0
    while r1:
        q, r = _divmod(r0, r1)
        r0, r1 = r1, r
        s0, s1 = s1, s0 ^ _clmul(q, s1)
    return _divmod(s0, _IRR)[1]


@functools.lru_cache(maxsize=4096)
def lagrange_at_zero(xs: tuple[int, ...]) -> tuple[int, ...]:
    """The coefficients c_j with p(0) = sum_j c_j p(x_j) for any polynomial of degree < len(xs):
    c_j = prod_{m != j} x_m / (x_m + x_j). The denominators are inverted together (one inversion, Montgomery's
    trick), because an inversion costs as much as some 25 products here."""
    nums, dens = [], []
    for j, xj in enumerate(xs):
        num, den = 1, 1
        for m, xm in enumerate(xs):
            if m != j:
                num = _mul_public(num, xm)
                den = _mul_public(den, xm ^ xj)
        nums.append(num)
        dens.append(den)
    prefix = [dens[0]]
    for d in dens[1:]:
        prefix.append(_mul(prefix[-1], d))
    inv = _inverse(prefix[-1])  # 1 / (d_0 ... d_{t-1})
    inverses = [0] * len(dens)
    for i in range(len(dens) - 1, 0, -1):
        inverses[i] = _mul(inv, prefix[i - 1])
        inv = _mul(inv, dens[i])
    inverses[0] = inv
    return tuple(_mul(n, i) for n, i in zip(nums, inverses, strict=True))


def split(chunk: bytes, *, threshold: int, holders: int) -> list[bytes]:
    """`holders` shares (evaluations at x = 1..holders) of a random polynomial of degree threshold - 1 whose
    constant term is `chunk`; the coefficients come from the OS CSPRNG."""
    if len(chunk) != CHUNK_BYTES:
        raise ValueError(f"chunk must be {CHUNK_BYTES} bytes, found {len(chunk)}")
    coeffs = [int.from_bytes(os.urandom(CHUNK_BYTES), "big") for _ in range(threshold - 1)]
    coeffs.append(int.from_bytes(chunk, "big"))  # highest degree first (Horner), the secret last
    shares = []
    for x in range(1, holders + 1):
        acc = 0
        for c in coeffs:
            acc = _mul_public(acc, x) ^ c
        shares.append(acc.to_bytes(CHUNK_BYTES, "big"))
    return shares


def combine(points: list[tuple[int, bytes]]) -> bytes:
    """The constant term from exactly `threshold` (x, share) points (more or fewer: a wrong value, no error)."""
    xs = tuple(x for x, _ in points)
    if len(set(xs)) != len(xs):
        raise ValueError("duplicate share indices")
    total = 0
    for c, (_, y) in zip(lagrange_at_zero(xs), points, strict=True):
        total ^= _mul(c, int.from_bytes(y, "big"))
    return total.to_bytes(CHUNK_BYTES, "big")
