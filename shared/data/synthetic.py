"""A seeded synthetic listening data set with the structure a text recommender can learn.

Catalog: `num_items` artists with pronounceable, unique made-up names (syllables; some carry a genre's naming
habit, e.g. "DJ ..." for techno, "... Quartet" for jazz) and tags: one main genre from `GENRES` first, then
1-3 secondary tags (a sub-genre of the main genre, a neighbouring genre, or a descriptor such as "chill").
Each genre's share of the catalog is uneven (Dirichlet), and popularity is Zipf-like over a random ranking.

Users: each has 1-3 favourite genres with Dirichlet weights. An artist is drawn with probability
`(1 - exploration) * sum_g taste[g] * affinity(artist, g) * popularity + exploration * popularity` (each term
normalised), where affinity is 1 for the main genre and 0.3 for a neighbouring genre among its tags. So a
held-out artist is predictable from the genre tags of the rest of the history, and popularity alone is a
weaker baseline. History length is lognormal (median `median_history`, clipped to
[`min_history`, `max_history`]); weights are heavy-tailed listen counts, higher for favourite genres;
timestamps (unix seconds) increase along each history.

Everything comes from one `numpy.random.default_rng(seed)`: the same arguments give the identical data set.
"""

from __future__ import annotations

import numpy as np

from fedrec.shared.data.types import Catalog, Dataset, LoadSummary, UserHistory

# A ring: neighbours in this list are related genres (an artist's "neighbouring genre" tag is one step away).
GENRES = (
    "rock", "metal", "punk", "indie", "folk", "country", "blues", "soul", "funk", "jazz",
    "classical", "ambient", "techno", "house", "drum and bass", "hip-hop", "reggae", "latin", "pop", "k-pop",
)
SUBGENRES = {
    "rock": ("classic rock", "hard rock", "alternative rock"),
    "metal": ("heavy metal", "death metal", "thrash metal"),
    "punk": ("hardcore punk", "pop punk", "post-punk"),
    "indie": ("indie pop", "indie rock", "lo-fi"),
    "folk": ("indie folk", "singer-songwriter", "traditional folk"),
    "country": ("americana", "bluegrass", "outlaw country"),
    "blues": ("delta blues", "chicago blues", "blues rock"),
    "soul": ("neo-soul", "motown", "rnb"),
    "funk": ("p-funk", "disco", "groove"),
    "jazz": ("bebop", "jazz fusion", "smooth jazz"),
    "classical": ("baroque", "romantic era", "chamber music"),
    "ambient": ("drone", "dark ambient", "new age"),
    "techno": ("minimal techno", "detroit techno", "industrial techno"),
    "house": ("deep house", "tech house", "disco house"),
    "drum and bass": ("liquid funk", "jungle", "neurofunk"),
    "hip-hop": ("rap", "trap", "boom bap"),
    "reggae": ("dub", "roots reggae", "dancehall"),
    "latin": ("salsa", "reggaeton", "bossa nova"),
    "pop": ("synthpop", "dance pop", "electropop"),
    "k-pop": ("korean", "idol pop", "k-ballad"),
}
DESCRIPTORS = ("female vocalists", "male vocalists", "instrumental", "chill", "energetic", "80s", "90s", "00s",
               "seen live", "experimental", "acoustic", "melancholic")
# Naming habits: "{}" is a made-up word.
NAME_STYLES = {
    "techno": ("DJ {}", "{} Project"), "house": ("DJ {}", "{} Collective"), "drum and bass": ("DJ {}", "MC {}"),
    "hip-hop": ("MC {}", "Lil {}", "Young {}"), "jazz": ("{} Quartet", "{} Trio"),
    "classical": ("{} Ensemble", "{} Orchestra"), "metal": ("{} Doom", "Iron {}"), "punk": ("The {} Kids",),
    "country": ("{} Creek Band",), "soul": ("{} Sisters",), "latin": ("Los {}",), "k-pop": ("{} Girls",),
}
ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "sh", "ch", "br", "tr", "kr", "st")
VOWELS = ("a", "e", "i", "o", "u", "a", "o", "ai", "ou")
CODAS = ("", "", "", "n", "r", "s", "l", "m", "k")

NEIGHBOUR_AFFINITY = 0.3  # how much a taste for genre g draws artists that list g as a neighbouring genre
T0 = 1_514_764_800.0  # 2018-01-01 UTC; histories start within five years of it
DAY = 86_400.0


def _word(rng: np.random.Generator) -> str:
    n = int(rng.integers(2, 4))
    parts = [ONSETS[rng.integers(len(ONSETS))] + VOWELS[rng.integers(len(VOWELS))] for _ in range(n)]
    return ("".join(parts) + CODAS[rng.integers(len(CODAS))]).capitalize()


def _artist_name(rng: np.random.Generator, genre: str) -> str:
    style = rng.random()
    if style < 0.25 and genre in NAME_STYLES:
        styles = NAME_STYLES[genre]
        return styles[rng.integers(len(styles))].format(_word(rng))
    if style < 0.55:
        return _word(rng)
    if style < 0.7:
        return f"The {_word(rng)}s"
    return f"{_word(rng)} {_word(rng)}"


def _secondary_tags(rng: np.random.Generator, g: int) -> list[str]:
    """1-3 distinct tags after the main genre: sub-genre (1/2), neighbouring genre (1/4) or descriptor (1/4)."""
    want = int(rng.integers(1, 4))
    tags: list[str] = []
    while len(tags) < want:
        kind = rng.random()
        if kind < 0.5:
            options = SUBGENRES[GENRES[g]]
            tag = options[rng.integers(len(options))]
        elif kind < 0.75:
            tag = GENRES[(g + (1 if rng.random() < 0.5 else -1)) % len(GENRES)]
        else:
            tag = DESCRIPTORS[rng.integers(len(DESCRIPTORS))]
        if tag not in tags:
            tags.append(tag)
    return tags


def _catalog(rng: np.random.Generator, num_items: int) -> tuple[Catalog, np.ndarray]:
    """The catalog and its (num_items, num_genres) affinity matrix."""
    genre_share = rng.dirichlet(np.full(len(GENRES), 4.0))
    main = rng.choice(len(GENRES), size=num_items, p=genre_share)  # (num_items,)
    width = len(str(num_items - 1))
    names: list[str] = []
    taken: set[str] = set()
    tags: list[list[str]] = []
    affinity = np.zeros((num_items, len(GENRES)))
    for i, g in enumerate(main):
        name = _artist_name(rng, GENRES[g])
        while name.casefold() in taken:
            name = _artist_name(rng, GENRES[g])
        taken.add(name.casefold())
        names.append(name)
        tags.append([GENRES[g], *_secondary_tags(rng, int(g))])
        affinity[i, g] = 1.0
        for tag in tags[-1][1:]:
            if tag in GENRES:
                affinity[i, GENRES.index(tag)] = NEIGHBOUR_AFFINITY
    ids = [f"a{i:0{width}d}" for i in range(num_items)]
    return Catalog(ids, names, tags), affinity


def make_synthetic(
    num_users: int = 60,
    num_items: int = 400,
    seed: int = 0,
    *,
    zipf_exponent: float = 1.0,
    median_history: float = 30.0,
    min_history: int = 5,
    max_history: int = 100,
    exploration: float = 0.1,
) -> Dataset:
    """A synthetic `Dataset`, identical for identical arguments (see the module docstring for the model)."""
    if num_users < 1:
        raise ValueError(f"`num_users` must be >= 1. Found {num_users}.")
    if num_items < min_history:
        raise ValueError(f"`num_items` must be >= `min_history` ({min_history}). Found {num_items}.")
    if not 1 <= min_history <= max_history:
        raise ValueError(f"Need 1 <= `min_history` <= `max_history`. Found {min_history}, {max_history}.")
    if not 0.0 <= exploration <= 1.0:
        raise ValueError(f"`exploration` must be in [0, 1]. Found {exploration}.")
    rng = np.random.default_rng(seed)
    catalog, affinity = _catalog(rng, num_items)

    popularity = 1.0 / (1.0 + rng.permutation(num_items)) ** zipf_exponent  # (num_items,) Zipf over a ranking
    genre_draw = affinity * popularity[:, None]  # (num_items, num_genres)
    present = genre_draw.sum(axis=0) > 0
    genre_draw[:, present] /= genre_draw[:, present].sum(axis=0)
    genre_size = (affinity == 1.0).sum(axis=0).astype(float)  # favourite genres follow the catalog's shares
    fav_p = genre_size / genre_size.sum()
    pop_p = popularity / popularity.sum()

    width = len(str(num_users - 1))
    users: list[UserHistory] = []
    for u in range(num_users):
        n_fav = min(int(rng.choice([1, 2, 3], p=[0.4, 0.4, 0.2])), int((fav_p > 0).sum()))
        favs = rng.choice(len(GENRES), size=n_fav, replace=False, p=fav_p)
        taste = np.zeros(len(GENRES))
        taste[favs] = rng.dirichlet(np.ones(n_fav))
        p = (1.0 - exploration) * (genre_draw @ taste) + exploration * pop_p  # (num_items,)
        p /= p.sum()

        length = int(np.clip(round(rng.lognormal(np.log(median_history), 0.6)), min_history, max_history))
        length = min(length, int((p > 0).sum()))
        items = rng.choice(num_items, size=length, replace=False, p=p)  # (length,)
        rng.shuffle(items)
        liking = affinity[items] @ taste  # (length,) in [0, 1]
        activity = rng.normal(np.log(6.0), 0.8)
        counts = 1.0 + np.floor(np.exp(activity + rng.normal(0.0, 1.0, size=length)) * (0.3 + 2.0 * liking))
        start = T0 + rng.uniform(0.0, 5 * 365 * DAY)
        timestamps = start + np.cumsum(rng.exponential(3 * DAY, size=length))
        users.append(UserHistory(f"u{u:0{width}d}", items.astype(np.int64), counts, timestamps))

    summary = LoadSummary(source=f"synthetic(users={num_users}, items={num_items}, seed={seed})")
    summary.rows_read = summary.rows_used = sum(len(h) for h in users)
    return Dataset(catalog, users, summary)
