"""The server's side of a deployed run (`deployment-nodes` N > 0): population, public catalog, catalog handshake.

A simulation's population is the data set's users, one node each (`fedrec.shared.data.federation`). A deployed
run's population is N devices, each holding one user's history that the server never sees: `data` names only
the public catalog (`fedrec.shared.edge.catalog.load_public_catalog`), the server waits for N nodes, uses N as the
population for DP accounting and sampling, and sends each node the catalog before round 1 (`start_deployment`).
Every train and evaluate message then carries the catalog's hash (`message_config`), so a device holding
another catalog refuses the round instead of training against the wrong items.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache

from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from fedrec.shared.config import RunConfig
from fedrec.shared.data.federation import load_federation
from fedrec.shared.data.types import Catalog, LoadSummary
from fedrec.shared.edge.catalog import catalog_bytes, catalog_sha256, load_public_catalog
from fedrec.shared.protocol import CATALOG_SHA256, QUERY_CATALOG

log = logging.getLogger("fedrec.server")


class DeploymentError(RuntimeError):
    """A deployed run cannot start (no node stored the catalog)."""


@dataclass(frozen=True)
class ServerPopulation:
    """What the server knows of the federation: the public catalog and the number of users (one node each)."""

    catalog: Catalog
    users: int
    summary: LoadSummary


@lru_cache(maxsize=4)
def _public_catalog(data: str, item_metadata: str) -> tuple[Catalog, LoadSummary, str]:
    catalog, summary = load_public_catalog(data, item_metadata)
    return catalog, summary, catalog_sha256(catalog_bytes(catalog))


def server_population(cfg: RunConfig) -> ServerPopulation:
    """Simulation: the data set's catalog and user count. Deployment: the public catalog and N; no user split."""
    if not cfg.run.deployment_nodes:
        fed = load_federation(cfg)
        return ServerPopulation(fed.catalog, len(fed.splits), fed.summary)
    catalog, summary, _ = _public_catalog(cfg.data.source, cfg.data.item_metadata)
    return ServerPopulation(catalog, cfg.run.deployment_nodes, summary)


def message_config(cfg: RunConfig) -> dict[str, str]:
    """Extra train/evaluate config of a deployed run: the catalog's SHA-256 ({} in a simulation)."""
    if not cfg.run.deployment_nodes:
        return {}
    return {CATALOG_SHA256: _public_catalog(cfg.data.source, cfg.data.item_metadata)[2]}


def start_deployment(grid: Grid, cfg: RunConfig, nodes: list[int], catalog: Catalog) -> list[int]:
    """The nodes of the run. Simulation: `nodes` as given. Deployment: the first N connected nodes (node-id
    order; extra ones are left out, with a warning), each sent the catalog; nodes that did not store it stay in the
    population (a dropout in every round they are sampled: the accounting's N does not change) and are logged.

    Raises `DeploymentError` when no node stored the catalog.
    """
    if not cfg.run.deployment_nodes:
        return nodes
    if len(nodes) > cfg.run.deployment_nodes:
        log.warning("deployment: %d nodes connected, deployment-nodes is %d; leaving out nodes %s",
                    len(nodes), cfg.run.deployment_nodes, nodes[cfg.run.deployment_nodes:])
        nodes = nodes[:cfg.run.deployment_nodes]
    data = catalog_bytes(catalog)
    digest = catalog_sha256(data)
    config = ConfigRecord({QUERY_CATALOG: data, CATALOG_SHA256: digest})
    messages = [Message(RecordDict({"config": config}), dst_node_id=n, message_type=MessageType.QUERY)
                for n in nodes]
    stored, problems = set(), []
    for reply in grid.send_and_receive(messages):
        node = reply.metadata.src_node_id
        if reply.has_error():
            problems.append(f"node {node}: {reply.error.reason[:300]}")
            continue
        try:
            got = str(reply.content["config"][CATALOG_SHA256])
        except KeyError as e:
            problems.append(f"node {node}: malformed catalog reply (missing {e})")
            continue
        if got != digest:
            problems.append(f"node {node}: stored a catalog with SHA-256 {got}, expected {digest}")
            continue
        stored.add(node)
    problems += [f"node {n}: no reply to the catalog query" for n in nodes if n not in stored
                 and not any(p.startswith(f"node {n}:") for p in problems)]
    for p in problems:
        log.warning("deployment: catalog not stored: %s", p)
    if not stored:
        raise DeploymentError(f"no device stored the catalog ({len(catalog)} items, SHA-256 {digest}): "
                              + "; ".join(problems[:3]))
    log.warning("deployment: catalog (%d items, SHA-256 %s) stored on %d of %d devices", len(catalog), digest,
                len(stored), len(nodes))
    return nodes
