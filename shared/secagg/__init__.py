"""Secure aggregation: SecAgg+ (Bell et al., CCS 2020) over the masking protocol of Bonawitz et al. (CCS 2017).

The server learns the sum of the clients' clipped, fixed-point-encoded adapter deltas and nothing else about
any single client's delta, as long as it follows the protocol and fewer than t clients collude with it. Clients
may drop out at any stage; the round completes if every secret needed to unmask the sum can be reconstructed
from t shares, and aborts cleanly (nothing released) otherwise.

One job per module, in dependency order:

* `errors`   - `SecAggAborted` (the server gives the round up) and `SecAggProtocolError` (a client refuses).
* `encoding` - fixed-point encoding of a clipped vector into Z_2^32 or Z_2^64 such that a sum cannot overflow,
               and the encoding of a round (from the run's settings).
* `vectors`  - an adapter state as one vector in sorted key order, and back.
* `prg`      - mask expansion: HKDF-SHA256 key derivation and a ChaCha20 keystream as ring words.
* `shamir`   - Shamir secret sharing over GF(2^128) (pycryptodome-compatible shares, fast to combine).
* `crypto`   - X25519 key agreement, AES-256-GCM share transport, Shamir sharing of 32-byte secrets.
* `graph`    - the k-regular communication graph, its degree and the reconstruction threshold t.
* `protocol` - the four stages, the session id and the messages each carries (Flower-free).
* `masks`    - the self-mask commitment, the self and pairwise masks, derived alike on both ends.
* `client`   - `SecAggClient`, one client's state machine, and its state between stages.
* `server`   - `SecAggServer`, the server's state machine: graph, dropouts, feasibility, the unmasked sum.
* `wire`     - the stage messages as Flower records (what crosses the wire, and nothing else).

`docs/secure-aggregation.md` describes the protocol, the message flow, the threat model and the parameters.
"""
