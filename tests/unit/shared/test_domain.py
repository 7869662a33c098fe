"""The data domain: prompt wording per catalog kind, the music default unchanged."""

from __future__ import annotations

import numpy as np
import pytest

from fedrec.shared.config import ConfigError, RunConfig
from fedrec.shared.data.split import split_users
from fedrec.shared.data.synthetic import make_synthetic
from fedrec.shared.train.examples import draw_epochs, evaluation_prompt, prompt_prefix


def test_the_default_prompt_is_unchanged() -> None:
    """Every cached table and measured figure was made with "Listening history:" prompts: music keeps them."""
    assert prompt_prefix(RunConfig()) == "Listening history:"


@pytest.mark.parametrize(("name", "prefix"), [("movies", "Watch history:"), ("generic", "History:")])
def test_a_domain_words_every_prompt(name: str, prefix: str) -> None:
    """Training examples and the scoring prompt both begin with the domain's words."""
    ds = make_synthetic(num_users=2, num_items=30, seed=0)
    split = split_users(ds.users)[0]
    cfg = RunConfig.from_mapping({"data.domain": name})
    prompts, _, _ = draw_epochs(split, ds.catalog, cfg, np.random.default_rng(0), epochs=1)[0]
    assert prompts and all(p.startswith(prefix + " ") for p in prompts)
    assert evaluation_prompt(split, ds.catalog, "weight", 1, prompt_prefix(cfg)).startswith(prefix + " ")


def test_an_unknown_domain_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match="data.domain: must be one of music, movies, books, products, generic"):
        RunConfig.from_mapping({"data.domain": "films"})
