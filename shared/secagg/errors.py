"""The two ways a secure-aggregation round can stop, kept apart because they mean different things.

* `SecAggAborted` (server): too few clients survived to unmask the sum. Nothing is released and nothing is
  counted as a release; the reason names the stage and the numbers.
* `SecAggProtocolError` (client): a request breaks the protocol (a stale session, a share asked for twice in
  two different kinds, a threshold below a majority, a ciphertext that fails authentication). The client
  refuses to answer; to the server this is a dropout.
"""

from __future__ import annotations


class SecAggError(Exception):
    """Base class of the secure-aggregation errors."""


class SecAggAborted(SecAggError):
    """The server gives the round up: `stage` is where, `reason` is why (with the numbers)."""

    def __init__(self, stage: str, reason: str) -> None:
        super().__init__(f"{stage}: {reason}")
        self.stage = stage
        self.reason = reason


class SecAggProtocolError(SecAggError, ValueError):
    """A client refuses a request that breaks the protocol; the message says which rule."""
