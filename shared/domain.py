"""What the items are: the words a catalog's domain puts in prompts and on the command line.

fedrec was built for listening histories, and its prompts begin "Listening history:". A films, books or products
catalog reads more naturally with its own words, so the setting `data.domain` picks one row of `DOMAINS`:

- `prompt_prefix` starts every history prompt (training examples, evaluation, recommendation). It is part of the
  model's input, so a run must be scored with the domain it was trained with (it is in the run's config.json).
- the nouns and the reason phrase are what `fedrec recommend`, `fedrec score` and the Python API print.

`music` is the default and its prefix is exactly the prompt every measured figure and cached table was made with.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Domain:
    """The wording of one kind of catalog."""

    prompt_prefix: str  # first words of every history prompt (model input)
    item: str  # one catalog item ("artist")
    items: str  # several ("artists")
    because: str  # the reason column's heading ("because you played")


DOMAINS: dict[str, Domain] = {
    "music": Domain("Listening history:", "artist", "artists", "because you played"),
    "movies": Domain("Watch history:", "film", "films", "because you watched"),
    "books": Domain("Reading history:", "book", "books", "because you read"),
    "products": Domain("Purchase history:", "product", "products", "because you bought"),
    "generic": Domain("History:", "item", "items", "because of"),
}
DEFAULT_DOMAIN = "music"


def domain(name: str) -> Domain:
    """The `Domain` called `name`; a ValueError listing the known names otherwise."""
    if name not in DOMAINS:
        raise ValueError(f"unknown domain {name!r}; expected one of {', '.join(DOMAINS)}")
    return DOMAINS[name]
