"""The `hybrid` section: the recommender's release-based half (`fedrec.shared.hybrid`), apart from the other sections
because it is the largest."""

from __future__ import annotations

from dataclasses import dataclass

from fedrec.shared.config.sections import Section, setting
from fedrec.shared.errors import ConfigError


def parse_shares(text: str, *, key: str = "hybrid.shares") -> dict[str, float]:
    """`"popularity:0.25,cooccurrence:0.75"` -> {name: share}; ConfigError naming `key` if malformed."""
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition(":")
        try:
            share = float(value) if sep else float("nan")
        except ValueError:
            share = float("nan")
        if not sep or not name.strip() or not share >= 0:
            raise ConfigError(f"{key}: expected NAME:SHARE pairs with shares >= 0, found {part!r} in {text!r}")
        out[name.strip()] = share
    return out


@dataclass(frozen=True)
class HybridConfig(Section):
    """The recommender's release-based half (`fedrec.shared.hybrid`): which statistics are released once before
    adapter training, their public parameters, the budget split and the device-side blend weights."""

    NAME = "hybrid"
    releases: str = setting("popularity,cooccurrence,cross",
                            "statistics released before adapter training, in order: any of popularity, "
                            "cooccurrence, cross (empty = the LoRA tower alone)")
    shares: str = setting("popularity:0.25,cooccurrence:0.5,cross:0.25,adapter:0",
                          "user-level budget split as shares of 1/z^2 over the releases and the adapter rounds "
                          "(name:share pairs; used with user_dp.target_epsilon)", server_only=True)
    noise_multipliers: str = setting("", "the releases' noise multipliers (name:z pairs), set by target-epsilon "
                                         "calibration; empty = user_dp.noise_multiplier (record_dp's without "
                                         "user_dp) for every release",
                                     server_only=True)
    popularity_k: int = setting(25, "popularity: each user counts their k most-played items")
    popularity_threshold: float = setting(0.0, "popularity: noisy counts below this many noise stds become 0",
                                          server_only=True)
    gram_head: int = setting(200, "cooccurrence: the head of items (largest noisy counts) the Gram is over")
    gram_k: int = setting(15, "cooccurrence: each user's k most-played head items enter the Gram")
    gram_lambda: float = setting(100.0, "cooccurrence: EASE's L2 regularisation", server_only=True)
    gram_edge: float = setting(1.0, "cooccurrence: keep eigenvalues of the noisy Gram above this times the noise "
                                    "bulk's edge", server_only=True)
    cross_items: int = setting(3000, "cross: the items (largest noisy counts) the text cross statistic is over")
    cross_k: int = setting(15, "cross: each user's k most-played of those items")
    cross_rank: int = setting(16, "cross: dimension of a user's text code (public principal axes)")
    cross_lambda: float = setting(100.0, "cross: ridge regularisation", server_only=True)
    weight_text: float = setting(1.0, "blend weight of the zero-shot text score (whitened text profile)")
    weight_lora: float = setting(0.0, "blend weight of the LoRA user tower")
    weight_pop: float = setting(0.75, "blend weight of the popularity prior")
    weight_gram: float = setting(0.5, "blend weight of the co-occurrence (EASE) score")
    weight_cross: float = setting(0.5, "blend weight of the text cross score")

    def __post_init__(self) -> None:
        kinds = [k.strip() for k in self.releases.split(",") if k.strip()]
        bad = [k for k in kinds if k not in ("popularity", "cooccurrence", "cross")]
        self._check(not bad, "releases", "must list popularity, cooccurrence and/or cross")
        self._check(not kinds or "popularity" in kinds, "releases",
                    "must include popularity (the other releases are indexed by its noisy counts)")
        shares = parse_shares(self.shares)
        unknown = sorted(set(shares) - {"popularity", "cooccurrence", "cross", "adapter"})
        self._check(not unknown, "shares", f"names must be releases or 'adapter' (unknown: {unknown})")
        noise = parse_shares(self.noise_multipliers, key="hybrid.noise_multipliers")
        unknown = sorted(set(noise) - {"popularity", "cooccurrence", "cross"})
        self._check(not unknown, "noise_multipliers", f"names must be releases (unknown: {unknown})")
        for key in ("popularity_k", "gram_head", "gram_k", "cross_items", "cross_k", "cross_rank"):
            self._check(getattr(self, key) >= 1, key, "must be >= 1")
        for key in ("popularity_threshold", "gram_lambda", "cross_lambda"):
            self._check(getattr(self, key) >= 0, key, "must be >= 0")

    @property
    def kinds(self) -> list[str]:
        return [k.strip() for k in self.releases.split(",") if k.strip()]

    def share(self, name: str) -> float:
        return parse_shares(self.shares).get(name, 0.0)

    def weights(self) -> dict[str, float]:
        return {"text": self.weight_text, "lora": self.weight_lora, "pop": self.weight_pop,
                "gram": self.weight_gram, "cross": self.weight_cross}
