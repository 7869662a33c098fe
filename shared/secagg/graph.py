"""The communication graph of SecAgg+ (Bell et al. 2020): who masks with whom and who holds whose shares.

In Bonawitz et al. (2017) every client masks with, and secret-shares to, every other client: O(n) work and
traffic per client, O(n^2) for the server. SecAgg+ replaces the complete graph by a sparse k-regular one with
k = O(log n): a client masks only with its k neighbours and shares its secrets among them (and itself), so the
cost per client is O(log n) and the server's O(n log n).

The graph here is a Harary graph H(k, n) (each node joined to its k/2 nearest nodes on each side of a ring, and,
for odd k, to the opposite node) laid on a uniformly random permutation of the clients. H(k, n) is k-connected:
the survivors stay connected as long as fewer than k clients drop, so the server cannot split the survivors
into groups whose partial sums it would learn. The random labelling (drawn with the OS CSPRNG by the server)
keeps clients that were corrupted in advance from being planted as one client's whole neighbourhood, which is
what Bell et al.'s random graph is for; the server is trusted to draw it (honest-but-curious).

Threshold: a secret is shared among its owner's m = k + 1 holders (neighbours and itself) with threshold
t >= floor(m/2) + 1, a strict majority, so no two disjoint sets of t holders exist: a server can never collect
t self-mask shares *and* t key shares of the same client from clients that each answer only one kind (the
consistency rule of `protocol`).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping, Sequence

Graph = dict[int, frozenset[int]]  # node -> its neighbours (never itself)


def auto_degree(n: int) -> int:
    """k for n clients when none is configured: 2 ceil(log2 n) + 2, capped at the complete graph (n - 1)."""
    if n <= 1:
        return 0
    return min(n - 1, 2 * math.ceil(math.log2(n)) + 2)


def effective_degree(n: int, requested: int = 0) -> int:
    """The degree actually used: `requested` (0 = auto), capped at n - 1, made even when n is odd (n * k must be
    even for a k-regular graph to exist)."""
    if requested < 0:
        raise ValueError(f"requested degree must be >= 0, found {requested}")
    if n <= 1:
        return 0
    k = min(n - 1, requested or auto_degree(n))
    if n % 2 == 1 and k % 2 == 1:
        k += 1  # n odd -> n - 1 even, so k + 1 <= n - 1
    return k


def threshold(degree: int, fraction: float = 0.5) -> int:
    """t for m = degree + 1 share holders: ceil(fraction * m), never below a strict majority nor below 2."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"threshold fraction must be in (0, 1], found {fraction}")
    m = degree + 1
    return min(m, max(2, m // 2 + 1, math.ceil(fraction * m - 1e-9)))


def harary(nodes: Sequence[int], degree: int, rng: random.Random) -> Graph:
    """A k-regular, k-connected graph on `nodes`: H(k, n) on a random permutation drawn from `rng`."""
    n = len(nodes)
    if len(set(nodes)) != n:
        raise ValueError("nodes must be distinct")
    if not 0 <= degree <= max(n - 1, 0):
        raise ValueError(f"degree must be in 0..{max(n - 1, 0)} for {n} nodes, found {degree}")
    if n % 2 == 1 and degree % 2 == 1:
        raise ValueError(f"no {degree}-regular graph on {n} nodes (n * k is odd)")
    ring = list(nodes)
    rng.shuffle(ring)
    adj: dict[int, set[int]] = {v: set() for v in ring}
    for i, v in enumerate(ring):
        for step in range(1, degree // 2 + 1):
            w = ring[(i + step) % n]
            adj[v].add(w)
            adj[w].add(v)
        if degree % 2 == 1:
            w = ring[(i + n // 2) % n]
            adj[v].add(w)
            adj[w].add(v)
    return {v: frozenset(adj[v]) for v in nodes}


def is_connected(graph: Mapping[int, Iterable[int]], subset: Iterable[int]) -> bool:
    """Whether the subgraph induced by `subset` is connected (an empty subset counts as connected)."""
    keep = set(subset)
    if not keep:
        return True
    start = next(iter(keep))
    seen, todo = {start}, [start]
    while todo:
        v = todo.pop()
        for w in graph[v]:
            if w in keep and w not in seen:
                seen.add(w)
                todo.append(w)
    return seen == keep
