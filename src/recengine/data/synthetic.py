"""A deterministic synthetic data set with the structure real ones have.

- items: Zipf-like popularity, one or two categories each, a title made of words tied to its category, a price;
- users: a taste over two or three favourite categories;
- sequences: each next item follows the previous one through a fixed item→successor transition with probability
  ``p_sequential`` (a signal only an order-aware model can exploit), otherwise is drawn from the user's taste by
  popularity; lengths are log-normal, timestamps increase by exponential gaps.

Same arguments, same data, on every machine (numpy's PCG64 generator).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

_ADJECTIVES = [
    "classic",
    "bright",
    "silent",
    "golden",
    "urban",
    "wild",
    "gentle",
    "electric",
    "hidden",
    "modern",
    "vintage",
    "lunar",
    "crimson",
    "swift",
    "quiet",
    "bold",
    "frozen",
    "velvet",
    "rustic",
    "cosmic",
]
_NOUNS = [
    "river",
    "garden",
    "engine",
    "story",
    "harbor",
    "signal",
    "forest",
    "mirror",
    "voyage",
    "canvas",
    "melody",
    "circuit",
    "lantern",
    "summit",
    "island",
    "compass",
    "echo",
    "meadow",
    "prism",
    "atlas",
]
_CATEGORIES = [
    "action",
    "comedy",
    "drama",
    "horror",
    "romance",
    "scifi",
    "documentary",
    "animation",
    "thriller",
    "fantasy",
    "music",
    "sports",
    "travel",
    "cooking",
    "history",
    "science",
    "kids",
    "crime",
    "western",
    "mystery",
    "beauty",
    "fitness",
    "gaming",
    "nature",
    "art",
    "tech",
    "fashion",
    "health",
    "finance",
    "poetry",
]


@dataclass(frozen=True)
class SynthConfig:
    n_users: int = 2000
    n_items: int = 1000
    n_categories: int = 20
    mean_length: float = 20.0
    min_length: int = 5
    max_length: int = 200
    p_sequential: float = 0.6
    n_successors: int = 3
    zipf_exponent: float = 0.9
    seed: int = 0
    start_ts: int = 1_700_000_000  # 2023-11-14, any fixed origin will do


def generate(config: SynthConfig | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Raw interactions (``user, item, timestamp, rating``) and item metadata (``item, title, categories, price``)."""
    c = config or SynthConfig()
    if c.n_items < 10 or c.n_users < 1:
        raise ValueError("synthetic data needs at least 10 items and 1 user")
    rng = np.random.default_rng(c.seed)
    n_cat = max(2, min(c.n_categories, len(_CATEGORIES)))

    # Items: popularity by a shuffled Zipf law, a primary category and sometimes a second one.
    pop = 1.0 / np.arange(1, c.n_items + 1) ** c.zipf_exponent
    pop = pop[rng.permutation(c.n_items)]
    primary = rng.integers(0, n_cat, size=c.n_items)
    secondary = np.where(rng.random(c.n_items) < 0.3, rng.integers(0, n_cat, size=c.n_items), -1)
    by_cat = [np.flatnonzero(primary == k) for k in range(n_cat)]
    # Successors live mostly in the same category, so tastes and sequences agree often but not always.
    successors = np.empty((c.n_items, c.n_successors), dtype=np.int64)
    for i in range(c.n_items):
        pool = by_cat[primary[i]] if rng.random() < 0.7 and by_cat[primary[i]].size > 1 else np.arange(c.n_items)
        successors[i] = rng.choice(pool, size=c.n_successors, replace=True)
    succ_p = np.array([0.6, 0.3, 0.1][: c.n_successors], dtype=np.float64)
    succ_p = succ_p / succ_p.sum() if succ_p.size == c.n_successors else np.full(c.n_successors, 1 / c.n_successors)

    # Users: two or three favourite categories with Dirichlet weights.
    lengths = np.clip(
        rng.lognormal(np.log(c.mean_length) - 0.32, 0.8, size=c.n_users).astype(np.int64),
        c.min_length,
        c.max_length,
    )
    cat_item_p = [pop[idx] / pop[idx].sum() if idx.size else None for idx in by_cat]
    users, items, times, ratings = [], [], [], []
    for u in range(c.n_users):
        favs = rng.choice(n_cat, size=int(rng.integers(2, 4)), replace=False)
        fav_w = rng.dirichlet(np.ones(favs.size))
        t = c.start_ts + int(rng.integers(0, 180 * 86_400))
        prev = -1
        for _ in range(int(lengths[u])):
            if prev >= 0 and rng.random() < c.p_sequential:
                nxt = int(successors[prev, rng.choice(c.n_successors, p=succ_p)])
            else:
                k = int(favs[rng.choice(favs.size, p=fav_w)])
                idx = by_cat[k]
                nxt = int(rng.choice(idx, p=cat_item_p[k])) if idx.size else int(rng.integers(c.n_items))
            t += int(rng.exponential(6 * 3600)) + 1
            users.append(u)
            items.append(nxt)
            times.append(t)
            ratings.append(float(rng.integers(3, 6)) if rng.random() < 0.8 else float(rng.integers(1, 3)))
            prev = nxt

    interactions = pl.DataFrame(
        {
            "user": [f"u{u}" for u in users],
            "item": [f"i{i}" for i in items],
            "timestamp": np.asarray(times, dtype=np.int64),
            "rating": np.asarray(ratings, dtype=np.float64),
        }
    )
    titles = [
        f"{_ADJECTIVES[int(rng.integers(len(_ADJECTIVES)))].title()} "
        f"{_NOUNS[(i * 7 + primary[i]) % len(_NOUNS)].title()} {_CATEGORIES[primary[i]]}"
        for i in range(c.n_items)
    ]
    categories = [
        [_CATEGORIES[primary[i]]]
        + ([_CATEGORIES[secondary[i]]] if secondary[i] >= 0 and secondary[i] != primary[i] else [])
        for i in range(c.n_items)
    ]
    meta = pl.DataFrame(
        {
            "item": [f"i{i}" for i in range(c.n_items)],
            "title": titles,
            "categories": categories,
            "price": np.round(rng.lognormal(3.0, 0.7, size=c.n_items), 2),
        },
        schema_overrides={"categories": pl.List(pl.String)},
    )
    return interactions, meta
