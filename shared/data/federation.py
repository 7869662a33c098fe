"""The population of a simulated federation: the public catalog plus one private split per virtual client.

In a simulation every client runs on the same machine, so the data set file is parsed once per process and
client `partition-id` i reads split i and nothing else. On an edge device (deployment) the client reads its own
history file instead; see `fedrec.client`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from fedrec.shared.config import RunConfig
from fedrec.shared.data.load import load_dataset
from fedrec.shared.data.split import UserSplit, split_users
from fedrec.shared.data.types import Catalog, LoadSummary


@dataclass(frozen=True)
class Federation:
    catalog: Catalog  # public
    splits: list[UserSplit]  # private, one per virtual client (partition-id = index)
    summary: LoadSummary

    def split_for(self, partition_id: int, num_partitions: int) -> UserSplit:
        if num_partitions != len(self.splits):
            raise ValueError(
                f"the simulation has {num_partitions} virtual clients but the data set has {len(self.splits)} "
                "users: start it with one supernode per user (num-supernodes)"
            )
        return self.splits[partition_id]


@lru_cache(maxsize=4)
def _load(data: str, fmt: str, item_metadata: str, max_users: int, split_seed: int, min_interactions: int,
          holdout: str) -> Federation:
    ds = load_dataset(data, metadata=item_metadata or None, fmt=fmt or None)
    users = ds.users[:max_users] if max_users else ds.users
    splits = split_users(users, seed=split_seed, min_interactions=min_interactions, holdout=holdout)
    return Federation(ds.catalog, splits, ds.summary)


def load_federation(cfg: RunConfig) -> Federation:
    """Parse (once per process) and split the data set named by `cfg`."""
    d = cfg.data
    return _load(d.source, d.format, d.item_metadata, d.max_users, d.split_seed, d.min_interactions, d.holdout)
