"""A deterministic synthetic data set with the structure real ones have, and the signals each engine is for.

- items: a category (sometimes a second one), a theme inside it (a sub-genre or product type: its items share a
  title word and a price band), and a series inside the theme (a title and its sequels "… 2", "… 3", at about the
  same price); popularity follows a Zipf law over series, and sequels are mostly reached from the part before;
- users: a price level, and interests in themes that drift: each session is about a recent interest more often
  than an old one, or about a theme new to the user, which then becomes the most recent interest;
- sequences: sessions of a few items minutes apart, days between sessions. Within a session the next item is the
  sequel of the previous one with probability ``p_sequential`` (an order-only signal), otherwise an unseen item of
  the session's theme, drawn by popularity times the fit of its price to the session's price level; log-normal
  lengths, increasing timestamps, no item twice for a user while unseen ones are left.

What each engine can use: the whole history as a bag (EASE) tells which themes a user touched, the recent items
tell which one is current and which part of a series comes next (the sequence models), and the metadata tells
that a rarely seen sequel belongs with its first part's theme and price (the two-tower item tower).

Same arguments, same data, on every machine (numpy's PCG64 generator).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

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
    """Chance that the next item of a session is the sequel of the previous one, when it has one not yet seen."""
    mean_theme: float = 25.0  # items per theme, on average
    mean_series: float = 3.0  # items per series, on average (a third of the series are a single item)
    mean_session: float = 4.0  # items per session, on average
    n_interests: tuple[int, int] = (2, 4)  # themes a user starts with, inclusive range
    p_explore: float = 0.4  # chance that a session is about a theme drawn by popularity, not from the interests
    interest_decay: float = 0.3  # after each session every interest fades by this factor and the session's gains 1
    p_off_topic: float = 0.1  # chance that an item comes from any of the user's interests instead of the session's
    price_width: float = 0.4  # spread of the prices a session picks around its price level, in log-price
    price_drift: float = 0.5  # spread of a session's price level around the user's, in log-price
    zipf_exponent: float = 0.9
    seed: int = 0
    start_ts: int = 1_700_000_000  # 2023-11-14, any fixed origin will do


@dataclass(frozen=True)
class _Catalogue:
    """Item structure, by item index 0..n-1 (themes and series are numbered from 0)."""

    primary: np.ndarray  # (n,) category
    theme: np.ndarray  # (n,) theme, inside the primary category
    theme_noun: np.ndarray  # (n_themes,) index into _NOUNS: the title word a theme's items share
    series: np.ndarray  # (n,) series, inside the theme
    part: np.ndarray  # (n,) 1-based position in the series
    sequel: np.ndarray  # (n,) the next part, -1 for the last one
    entry: np.ndarray  # (n,) popularity as the item a user picks from a theme (not reached as a sequel)
    log_price: np.ndarray  # (n,)
    by_theme: list[np.ndarray]  # items of each theme, none empty

    def price_fit(self, pool: np.ndarray, level: float, width: float) -> np.ndarray:
        """Weights of the items in ``pool`` for a session whose price level is ``level``."""
        fit: np.ndarray = self.entry[pool] * np.exp(-0.5 * ((self.log_price[pool] - level) / width) ** 2)
        return fit


def _catalogue(c: SynthConfig, n_cat: int, rng: np.random.Generator) -> _Catalogue:
    primary = rng.integers(0, n_cat, size=c.n_items)
    theme = np.empty(c.n_items, dtype=np.int64)
    nouns: list[int] = []
    for k in range(n_cat):
        members = np.flatnonzero(primary == k)
        if members.size == 0:
            continue
        # Random theme sizes; renumbering the drawn themes keeps none empty.
        drawn = rng.integers(0, max(1, round(members.size / c.mean_theme)), size=members.size)
        used, local = np.unique(drawn, return_inverse=True)
        theme[members] = len(nouns) + local
        nouns.extend(rng.choice(len(_NOUNS), size=used.size, replace=used.size > len(_NOUNS)).tolist())
    order = np.argsort(theme, kind="stable")  # by theme, then by item: each theme's items in index order
    bounds = np.searchsorted(theme[order], np.arange(len(nouns) + 1))
    by_theme = [order[a:b] for a, b in pairwise(bounds)]

    series = np.empty(c.n_items, dtype=np.int64)
    part = np.empty(c.n_items, dtype=np.int64)
    sequel = np.full(c.n_items, -1, dtype=np.int64)
    series_theme: list[int] = []
    for t, members in enumerate(by_theme):
        start = 0
        while start < members.size:
            # A third are single items, the rest 2 + geometric: long series are rare, as in real catalogues.
            extra = int(rng.geometric(1 / max(1.0, 1.5 * c.mean_series - 2.5))) - 1
            run = members[start : start + (1 if rng.random() < 1 / 3 else 2 + extra)]
            series[run] = len(series_theme)
            part[run] = np.arange(1, run.size + 1)
            sequel[run[:-1]] = run[1:]
            series_theme.append(t)
            start += run.size
    n_series = len(series_theme)
    series_pop = (1.0 / np.arange(1, n_series + 1) ** c.zipf_exponent)[rng.permutation(n_series)]
    entry = series_pop[series] * np.where(part == 1, 1.0, 0.1)  # a few users start a series past its first part
    # Prices: a band per theme (budget or premium product types), a level per series, a little noise per item.
    series_price = rng.normal(3.0, 0.6, size=len(nouns))[series_theme] + rng.normal(0.0, 0.3, size=n_series)
    log_price = series_price[series] + rng.normal(0.0, 0.05, size=c.n_items)
    return _Catalogue(primary, theme, np.asarray(nouns), series, part, sequel, entry, log_price, by_theme)


def _draw(pool: np.ndarray, weights: np.ndarray, seen: np.ndarray, rng: np.random.Generator) -> int | None:
    """An item of ``pool`` not yet ``seen`` (a mask over all items), with probability proportional to ``weights``;
    None when every one was seen."""
    cum = np.cumsum(np.where(seen[pool], 0.0, weights))
    if cum.size == 0 or cum[-1] <= 0.0:
        return None
    return int(pool[min(pool.size - 1, int(np.searchsorted(cum, rng.random() * cum[-1], side="right")))])


def generate(config: SynthConfig | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Raw interactions (``user, item, timestamp, rating``) and item metadata (``item, title, categories, price``)."""
    c = config or SynthConfig()
    if c.n_items < 10 or c.n_users < 1:
        raise ValueError("synthetic data needs at least 10 items and 1 user")
    rng = np.random.default_rng(c.seed)
    n_cat = max(2, min(c.n_categories, len(_CATEGORIES)))
    cat = _catalogue(c, n_cat, rng)
    n_themes = len(cat.by_theme)
    theme_pop = np.array([cat.entry[m].sum() for m in cat.by_theme])
    theme_pop /= theme_pop.sum()
    secondary = np.where(rng.random(c.n_items) < 0.3, rng.integers(0, n_cat, size=c.n_items), -1)

    lengths = np.clip(
        rng.lognormal(np.log(c.mean_length) - 0.32, 0.8, size=c.n_users).astype(np.int64),
        c.min_length,
        c.max_length,
    )
    everything = np.arange(c.n_items)
    seen = np.zeros(c.n_items, dtype=bool)  # the current user's items so far
    users: list[int] = []
    items: list[int] = []
    times: list[int] = []
    ratings: list[float] = []
    for u in range(c.n_users):
        interest = np.zeros(n_themes)
        n_start = min(n_themes, int(rng.integers(c.n_interests[0], c.n_interests[1] + 1)))
        interest[rng.choice(n_themes, size=n_start, replace=False, p=theme_pop)] = 1.0
        level = rng.normal(3.0, 0.3)
        t = c.start_ts + int(rng.integers(0, 180 * 86_400))
        left = int(lengths[u])
        while left > 0:
            topic = int(rng.choice(n_themes, p=theme_pop if rng.random() < c.p_explore else interest / interest.sum()))
            anchor = level + rng.normal(0.0, c.price_drift)  # what the user is shopping for in this session
            prev = -1
            for _ in range(min(left, int(rng.geometric(1 / c.mean_session)))):
                nxt: int | None = None
                if prev >= 0 and cat.sequel[prev] >= 0 and not seen[cat.sequel[prev]] and rng.random() < c.p_sequential:
                    nxt = int(cat.sequel[prev])
                if nxt is None:
                    k = topic
                    if rng.random() < c.p_off_topic:
                        k = int(rng.choice(n_themes, p=interest / interest.sum()))
                    nxt = _draw(cat.by_theme[k], cat.price_fit(cat.by_theme[k], anchor, c.price_width), seen, rng)
                if nxt is None:  # the theme is used up: any unseen item, else a repeat
                    nxt = _draw(everything, cat.price_fit(everything, anchor, c.price_width), seen, rng)
                if nxt is None:
                    nxt = int(rng.integers(c.n_items))
                t += int(rng.exponential(15 * 60)) + 1
                users.append(u)
                items.append(nxt)
                times.append(t)
                ratings.append(float(rng.integers(3, 6)) if rng.random() < 0.8 else float(rng.integers(1, 3)))
                seen[nxt] = True
                prev = nxt
                left -= 1
            t += int(rng.exponential(3 * 86_400))
            interest *= c.interest_decay
            interest[topic] += 1.0
        seen[items[len(items) - int(lengths[u]) :]] = False

    interactions = pl.DataFrame(
        {
            "user": [f"u{u}" for u in users],
            "item": [f"i{i}" for i in items],
            "timestamp": np.asarray(times, dtype=np.int64),
            "rating": np.asarray(ratings, dtype=np.float64),
        }
    )
    # A series is named by an adjective and its theme's noun: the series of one theme take distinct adjectives (from a
    # random start) while there are enough, so a title tells its series apart from the theme's others.
    n_series = int(cat.series.max()) + 1
    series_theme = np.zeros(n_series, dtype=np.int64)
    series_theme[cat.series] = cat.theme
    first_of_theme = np.searchsorted(series_theme, series_theme)  # series are numbered theme by theme
    start = rng.integers(0, len(_ADJECTIVES), size=len(cat.by_theme))
    adjective = (start[series_theme] + np.arange(n_series) - first_of_theme) % len(_ADJECTIVES)
    # "Golden Harbor 2 drama": the series' adjective, the theme's noun, the part after the first, the category.
    titles = [
        f"{_ADJECTIVES[adjective[cat.series[i]]].title()} {_NOUNS[cat.theme_noun[cat.theme[i]]].title()}"
        f"{f' {cat.part[i]}' if cat.part[i] > 1 else ''} {_CATEGORIES[cat.primary[i]]}"
        for i in range(c.n_items)
    ]
    categories = [
        [_CATEGORIES[cat.primary[i]]]
        + ([_CATEGORIES[secondary[i]]] if secondary[i] >= 0 and secondary[i] != cat.primary[i] else [])
        for i in range(c.n_items)
    ]
    meta = pl.DataFrame(
        {
            "item": [f"i{i}" for i in range(c.n_items)],
            "title": titles,
            "categories": categories,
            "price": np.round(np.exp(cat.log_price), 2),
        },
        schema_overrides={"categories": pl.List(pl.String)},
    )
    return interactions, meta
