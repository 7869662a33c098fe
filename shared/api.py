"""fedrec's Python API: load a trained model, recommend for a history, score candidates for a history.

    from fedrec.shared.api import Recommender

    rec = Recommender.load("runs/20260101-120000")      # a run directory, its model/ export, a device state dir
    for item, score, reasons in rec.recommend(["Radiohead", "Portishead"], k=10):
        print(item, round(score, 2), "because of", ", ".join(reasons))
    rec.score(["Radiohead", "Portishead"], ["Massive Attack", "Metallica"])   # [float, float]

A history is a list of item names or ids, most important first, or a mapping {name or id: weight} (weights order
the prompt: plays, ratings). An item matches by id, else by name (case-insensitive), as `fedrec recommend` reads a
history file. An unknown item is an `UnknownItemsError` naming every one (with close catalog names); with
`strict=False` unknown history items are skipped with a warning that lists them. Nothing is dropped silently.

Every score comes from `fedrec.shared.model.scoring.score_histories`, the entry point evaluation and the command
line use, so these are exactly the scores the run's evaluation ranked with.
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedrec.shared.config import RunConfig
from fedrec.shared.data.types import Catalog, UserHistory
from fedrec.shared.domain import Domain, domain
from fedrec.shared.model.recommend import load_trained
from fedrec.shared.model.recommend import recommend as rank_with_reasons
from fedrec.shared.model.recommender import Recommender as RecommenderModel
from fedrec.shared.model.scoring import score_histories

History = Sequence[str] | Mapping[str, float]


class UnknownItemsError(KeyError):
    """Items that are not in the model's catalog (the message lists each with its closest catalog names)."""

    def __init__(self, unknown: list[str], suggestions: dict[str, list[str]], where: str) -> None:
        shown = "; ".join(f"{u!r}" + (f" (did you mean {', '.join(map(repr, suggestions[u]))}?)"
                                      if suggestions.get(u) else "") for u in unknown)
        super().__init__(f"{len(unknown)} {where} not in the model's catalog: {shown}")
        self.unknown = unknown

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


@dataclass(frozen=True)
class Recommendation:
    """One recommended item; unpacks as `(item, score, reasons)`."""

    item: str  # display name
    item_id: str  # catalog id
    score: float
    reasons: list[str]  # the closest history items ("because you played ...")
    tags: list[str]  # its top public tags (up to 3)

    def __iter__(self) -> Iterator[object]:
        return iter((self.item, self.score, self.reasons))


class Recommender:
    """A trained fedrec model, ready to score: `Recommender.load(path)`."""

    def __init__(self, cfg: RunConfig, catalog: Catalog, model: RecommenderModel) -> None:
        self.cfg, self.catalog, self.model = cfg, catalog, model
        self._by_id = {item_id: i for i, item_id in enumerate(catalog.item_ids)}
        self._by_name: dict[str, int] = {}
        for i, name in enumerate(catalog.names):
            self._by_name.setdefault(name.casefold(), i)

    @classmethod
    def load(cls, path: str | Path) -> Recommender:
        """From a run directory, an export directory (`fedrec export`, `<run>/model`) or a device's state dir."""
        return cls(*load_trained(Path(path)))

    @property
    def domain(self) -> Domain:
        """The wording of the model's catalog (`data.domain`)."""
        return domain(self.cfg.data.domain)

    # -- items ----------------------------------------------------------------------------------------------

    def index(self, item: str) -> int | None:
        """Catalog position of an item given by id, else by name (case-insensitive); None if unknown."""
        hit = self._by_id.get(item)
        return hit if hit is not None else self._by_name.get(str(item).casefold())

    def _indices(self, items: Sequence[str], where: str, strict: bool) -> list[int | None]:
        found = [self.index(i) for i in items]
        unknown = [str(i) for i, f in zip(items, found, strict=True) if f is None]
        if unknown and strict:
            names = list(self._by_name)
            tips = {u: [self.catalog.names[self._by_name[n]] for n in difflib.get_close_matches(u.casefold(), names,
                                                                                               n=3)]
                    for u in unknown}
            raise UnknownItemsError(unknown, tips, where)
        if unknown:
            warnings.warn(f"skipped {len(unknown)} {where} not in the model's catalog: {unknown}", stacklevel=3)
        return found

    def history(self, history: History | UserHistory, *, strict: bool = True) -> UserHistory:
        """A history as the model reads it: catalog positions and weights (first item = largest weight)."""
        if isinstance(history, UserHistory):
            return history
        if isinstance(history, str):
            raise TypeError("a history is a list of item names or ids (or {item: weight}), not one string")
        pairs = (list(history.items()) if isinstance(history, Mapping)
                 else [(item, float(len(history) - k)) for k, item in enumerate(history)])
        found = self._indices([p[0] for p in pairs], "history items", strict)
        weights: dict[int, float] = {}
        for (_, w), i in zip(pairs, found, strict=True):
            if i is not None:
                weights[i] = weights.get(i, 0.0) + float(w)
        if not weights:
            raise ValueError("the history has no item of the model's catalog")
        items = np.fromiter(weights, dtype=np.int64, count=len(weights))
        return UserHistory("api", items, np.array(list(weights.values()), dtype=np.float64))

    # -- scoring --------------------------------------------------------------------------------------------

    def scores(self, history: History | UserHistory, *, strict: bool = True) -> np.ndarray:
        """(N,) scores of every catalog item for `history` (history items included, not excluded)."""
        return score_histories(self.model, self.cfg, self.catalog, [self.history(history, strict=strict)])[0]

    def score(self, history: History | UserHistory, candidates: Sequence[str], *, strict: bool = True
              ) -> list[float]:
        """The score of each candidate (name or id) for `history`, in the candidates' order; higher is better."""
        found = self._indices(list(candidates), "candidates", strict=True)
        row = self.scores(history, strict=strict)
        return [float(row[i]) for i in found if i is not None]

    def recommend(self, history: History | UserHistory, k: int = 10, *, reasons: int = 2, strict: bool = True
                  ) -> list[Recommendation]:
        """The `k` best items not in `history`, best first, each with its closest history items as reasons."""
        recs = rank_with_reasons(self.model, self.cfg, self.catalog, self.history(history, strict=strict), k,
                                 reasons=reasons)
        return [Recommendation(r.name, self.catalog.item_ids[r.item], r.score, r.because, r.tags) for r in recs]
