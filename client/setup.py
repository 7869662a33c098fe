"""What one train or evaluate message asks of this device, and the device's data and identity.

Where the data comes from. In a simulation (node config `partition-id`, `num-partitions`) every client parses
the run's data set once per process and takes split `partition-id`. A *deployed device* (node config `data-path`,
as `fedrec client --data PATH` sets it) reads only that file: one user's history (node config `user` picks one if
the file holds several), mapped onto the public catalog the server sent (`fedrec.shared.edge.catalog`, stored in
the state directory by `store_catalog`) and split with the run's split settings; it reads nothing else private.
A deployed device needs `state-dir` in its node config; its identity (ledger subject, report device id) is node
config `device-id` or else the fingerprint of its signing key, never a partition number.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flwr.app import ConfigRecord, Context, Message, RecordDict

from fedrec.client.device_state import DeviceState, resolve_state_dir
from fedrec.client.node_config import NODE_DATA_PATH, NODE_DEVICE_ID, NODE_EPSILON_MAX, NODE_STATE_DIR, NODE_USER
from fedrec.shared.config import RunConfig
from fedrec.shared.data.federation import load_federation
from fedrec.shared.data.load import load_history
from fedrec.shared.data.split import UserSplit, split_users
from fedrec.shared.data.types import Catalog, DataFormatError
from fedrec.shared.edge.catalog import catalog_from_bytes, catalog_sha256
from fedrec.shared.errors import DeviceError
from fedrec.shared.privacy.canaries import canary_client_index
from fedrec.shared.protocol import (
    AUDIT_KEY,
    CATALOG_SHA256,
    DEVICE_STATE_ROOT,
    QUERY_CATALOG,
    RELEASED,
    RUN_ID,
    SEED,
    SERVER_ROUND,
    State,
    is_setting,
    record_to_state,
)

log = logging.getLogger("fedrec.client")



@dataclass(frozen=True)
class RoundSetup:
    """What one train or evaluate message asks of this node, with its data."""

    cfg: RunConfig
    catalog: Catalog
    split: UserSplit | None  # None on an audit canary client
    global_state: State
    server_round: int
    seed: int
    run_id: str
    local_key: int  # per-node component of local seeds: the partition id, or a hash of a deployed device's id
    released: State = field(default_factory=dict)  # the released statistics (evaluate messages; fedrec.shared.hybrid)
    extra: dict[str, Any] = field(default_factory=dict)  # the message's other config keys (a release's parameters)


def is_deployed(context: Context) -> bool:
    """A deployed device names its own history file in its node config; a simulated node has a partition."""
    return bool(str(context.node_config.get(NODE_DATA_PATH, "") or ""))


def deployed_state(context: Context) -> DeviceState:
    """A deployed device's state directory (node config `state-dir`): required, never proposed by the server."""
    own = str(context.node_config.get(NODE_STATE_DIR, "") or "")
    if not own:
        raise DeviceError("state", f"a deployed device (node config {NODE_DATA_PATH}="
                                   f"{context.node_config.get(NODE_DATA_PATH)!r}) needs node config "
                                   f"{NODE_STATE_DIR!r}: its privacy ledger, signing key, catalog and last adapter "
                                   "live there (fedrec client --state-dir DIR)")
    return DeviceState(Path(own))


_CATALOGS: dict[str, Catalog] = {}  # SHA-256 -> parsed catalog (per process)


_SPLITS: dict[tuple, UserSplit] = {}  # (path, mtime, size, user, catalog hash, split settings) -> split


def _stored_catalog(store: DeviceState, expected: str) -> Catalog:
    """The catalog in the state directory, which must be the run's (`expected` SHA-256, from the message)."""
    if not expected:
        raise DeviceError("config", f"the server runs a deployed federation but its message names no "
                                    f"{CATALOG_SHA256!r}")
    data = store.load_catalog_bytes()
    digest = catalog_sha256(data)
    if digest != expected:
        raise DeviceError("catalog", f"{store.catalog_path}: this device's catalog (SHA-256 {digest}) is not the "
                                     f"run's ({expected}); the server sends its catalog at the start of a run "
                                     "(query), so this device missed it: restart the device before the run starts")
    if digest not in _CATALOGS:
        _CATALOGS.clear()
        _CATALOGS[digest] = catalog_from_bytes(data, where=str(store.catalog_path))
    return _CATALOGS[digest]


def _own_split(context: Context, catalog: Catalog, catalog_hash: str, cfg: RunConfig) -> UserSplit:
    """This device's user, read from its `data-path` onto `catalog` and split with the run's split settings.

    Cached per process, keyed by the file (path, mtime, size), the user, the catalog and the split settings.
    """
    path = Path(str(context.node_config[NODE_DATA_PATH])).expanduser()
    user = str(context.node_config.get(NODE_USER, "") or "") or None
    try:
        st = os.stat(path)
    except OSError as e:
        raise DeviceError("data", f"node config {NODE_DATA_PATH}={str(path)!r}: cannot read the history file: "
                                  f"{e}") from None
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size, user, catalog_hash, cfg.data.split_seed,
           cfg.data.min_interactions)
    if key in _SPLITS:
        return _SPLITS[key]
    try:
        history, summary = load_history(path, catalog, user=user)
    except DataFormatError as e:
        hint = f" (set node config {NODE_USER!r} to choose the user)" if user is None else ""
        raise DeviceError("data", f"node config {NODE_DATA_PATH}: {e}{hint}") from None
    if len(history) == 0:
        raise DeviceError("data", f"node config {NODE_DATA_PATH}={str(path)!r}: no item of user {history.user_id!r} "
                                  f"is in the run's catalog of {len(catalog)} items; {'; '.join(summary.lines())}")
    level = logging.WARNING if summary.skipped else logging.INFO  # skipped rows are counted, never dropped silently
    for line in summary.lines():
        log.log(level, "history %s", line)
    split = split_users([history], seed=cfg.data.split_seed, min_interactions=cfg.data.min_interactions,
                        holdout=cfg.data.holdout)[0]
    if len(_SPLITS) >= 4:
        _SPLITS.clear()
    _SPLITS[key] = split
    return split


def _device_key(subject: str) -> int:
    return int.from_bytes(hashlib.sha256(subject.encode()).digest()[:4], "big")


def read_setup(msg: Message, context: Context) -> RoundSetup:
    """Settings, data and the global adapter of a message."""
    config = dict(msg.content["config"])
    server_round, seed = int(config.pop(SERVER_ROUND)), int(config.pop(SEED))
    config.pop(AUDIT_KEY, None)  # this node's audit instructions, read by train()
    catalog_hash = str(config.pop(CATALOG_SHA256, ""))
    run_id = str(config.pop(RUN_ID, "")) or f"flower-run-{context.run_id}"
    context.state["round"] = ConfigRecord({RUN_ID: run_id, DEVICE_STATE_ROOT: str(config.pop(DEVICE_STATE_ROOT, ""))})
    cfg = RunConfig.from_mapping({k: v for k, v in config.items() if is_setting(k)}, source="server config")
    extra = {k: v for k, v in config.items() if not is_setting(k)}
    global_state = record_to_state(msg.content["arrays"])
    released = record_to_state(msg.content[RELEASED]) if RELEASED in msg.content else {}
    if is_deployed(context):
        if not cfg.run.deployment_nodes:
            raise DeviceError("config", f"this is a deployed device (node config {NODE_DATA_PATH}) but the server "
                                        "runs a simulation (deployment-nodes = 0), whose clients read the server's "
                                        "data set")
        if cfg.run.dp_diagnostics:  # a simulation-only setting: a device never sends loss or counts outside DP
            cfg = cfg.updated({"run.dp_diagnostics": False})
        catalog = _stored_catalog(deployed_state(context), catalog_hash)
        split = _own_split(context, catalog, catalog_hash, cfg)
        return RoundSetup(cfg, catalog, split, global_state, server_round, seed, run_id,
                          _device_key(device_subject(context)), released, extra)
    if cfg.run.deployment_nodes:
        raise DeviceError("config", f"the server runs a deployed federation (deployment-nodes = "
                                    f"{cfg.run.deployment_nodes}) but this node has no node config "
                                    f"{NODE_DATA_PATH!r} (its own history file)")
    fed = load_federation(cfg)
    partition, partitions = int(context.node_config["partition-id"]), int(context.node_config["num-partitions"])
    # partitions after the users' are the run's audit canary clients (fedrec.shared.privacy.canaries): no user, no data
    canary = canary_client_index(partition, partitions, cfg.audit.canary_clients)
    split = None if canary is not None else fed.split_for(partition, partitions - cfg.audit.canary_clients)
    return RoundSetup(cfg, fed.catalog, split, global_state, server_round, seed, run_id, partition, released, extra)


def device_subject(context: Context) -> str:
    """Whose ledger it is: a stored ledger for another subject is an error, never silently reused.

    Simulation: `partition-<id>`. Deployed device: node config `device-id`, else its signing key's fingerprint.
    """
    if is_deployed(context):
        own = str(context.node_config.get(NODE_DEVICE_ID, "") or "")
        return own or deployed_state(context).key_fingerprint()
    return f"partition-{int(context.node_config['partition-id'])}"


def device_state(context: Context) -> DeviceState | None:
    """The device's state directory: its own `state-dir` node setting, else the one the server proposed."""
    if is_deployed(context):
        return deployed_state(context)
    proposed = str(context.state["round"][DEVICE_STATE_ROOT]) if "round" in context.state else ""
    root = resolve_state_dir(context.node_config, proposed, device=device_subject(context))
    return None if root is None else DeviceState(root)


def device_budget(cfg: RunConfig, context: Context) -> RunConfig:
    """Apply the device's own `record-epsilon-max` (node config): the run's setting can lower it, never raise it."""
    own = float(context.node_config.get(NODE_EPSILON_MAX, 0) or 0)
    limits = [x for x in (own, cfg.record_dp.epsilon_max) if x > 0]
    return cfg.updated({"record_dp.epsilon_max": min(limits)}) if limits else cfg


def store_catalog(msg: Message, context: Context) -> Message:
    """A deployed run's catalog (`fedrec.shared.edge.catalog`): check its hash, parse it, store it, reply the hash."""
    if not is_deployed(context):
        raise DeviceError("config", f"catalog query: this node is not a deployed device (no node config "
                                    f"{NODE_DATA_PATH!r}); a simulated client reads the catalog from the run's "
                                    "data set")
    config = msg.content["config"]
    data, declared = bytes(config[QUERY_CATALOG]), str(config[CATALOG_SHA256])
    digest = catalog_sha256(data)
    if digest != declared:
        raise DeviceError("catalog", f"catalog query: the catalog's SHA-256 is {digest}, the message says {declared}")
    catalog_from_bytes(data, where="catalog query")  # a malformed catalog is refused, never stored
    deployed_state(context).save_catalog(data)
    return Message(RecordDict({"config": ConfigRecord({CATALOG_SHA256: digest})}), reply_to=msg)
