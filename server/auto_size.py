"""`synthetic:users=auto`: the embedded synthetic data sized to the federation that is actually there.

`flwr run .` starts as many simulated SuperNodes as its federation says (2 by default, `num-supernodes` to
change it), and fedrec's simulation semantics are one user per SuperNode: the DP accounting counts users, and a
client reads the split of its own partition only. So the default data set (`data.source =
"synthetic:users=auto,items=600"`) has no size of its own: before anything else the ServerApp counts the
connected nodes, takes the audit's canary clients away, and runs on `synthetic:users=N,...` with N the rest.
Every later step (the population of the accounting, the run's config.json, the settings sent to clients) sees
the resolved spec, so a client builds the same N-user data set and reads split `partition-id` of it, as with an
explicit size. An explicit `users=N` that does not match the nodes still fails loudly (`wait_for_nodes`,
`Federation.split_for`): only `auto` adapts.
"""

from __future__ import annotations

import time

from flwr.serverapp import Grid

from fedrec.shared.config import RunConfig
from fedrec.shared.data.load import is_auto_sized, with_users
from fedrec.shared.progress import check_stop

SETTLE_SECONDS = 2.0  # the node count must stay the same this long (nodes register one by one at start-up)


def settled_node_count(grid: Grid, timeout: float = 120.0, poll: float = 0.5) -> int:
    """The number of connected nodes once it is > 0 and unchanged for `SETTLE_SECONDS`."""
    deadline = time.monotonic() + timeout
    count, since = -1, time.monotonic()
    while True:
        check_stop()
        now_count = len(list(grid.get_node_ids()))
        if now_count != count:
            count, since = now_count, time.monotonic()
        elif count > 0 and time.monotonic() - since >= SETTLE_SECONDS:
            return count
        if time.monotonic() > deadline:
            raise TimeoutError(f"data.source users=auto: no stable set of SuperNodes within {timeout:.0f} s "
                               f"(last count {count})")
        time.sleep(poll)


def size_to_nodes(grid: Grid, cfg: RunConfig) -> RunConfig:
    """`cfg` with `users=auto` replaced by the number of connected user nodes; any other cfg unchanged."""
    if not is_auto_sized(cfg.data.source):
        return cfg
    nodes = settled_node_count(grid)
    users = nodes - cfg.audit.canary_clients
    if users < 1:
        raise ValueError(f"data.source users=auto: {nodes} SuperNode(s) connected, {cfg.audit.canary_clients} of them "
                         "audit canary clients: no node is left for a user")
    return cfg.updated({"data.source": with_users(cfg.data.source, users)}, source="users=auto")
