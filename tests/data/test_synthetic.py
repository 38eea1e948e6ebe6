"""The synthetic generator: deterministic, shaped like real data, with the signals the engines are for.

Each signal is measured on the raw output with counts, no model: sequels follow their first part (order), the recent
session tells the next item's category better than the whole history (drift), sessions are visible in the gaps,
and items that share metadata are consumed together (content), long-tail items included."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from recengine.data.synthetic import SynthConfig, generate
from recengine.data.transforms import build_dataset


def test_same_seed_same_data_different_seed_different_data() -> None:
    cfg = SynthConfig(n_users=80, n_items=50, seed=11)
    a, b = build_dataset(*generate(cfg)), build_dataset(*generate(cfg))
    assert a.content_hash == b.content_hash
    c = build_dataset(*generate(SynthConfig(n_users=80, n_items=50, seed=12)))
    assert c.content_hash != a.content_hash


def test_shape_metadata_and_timestamps() -> None:
    # 200 items: a user takes an item once, so on a catalogue much smaller than a few histories the head saturates.
    cfg = SynthConfig(n_users=100, n_items=200, seed=4, min_length=5)
    raw, meta = generate(cfg)
    assert raw.get_column("user").n_unique() == 100
    assert meta.height == 200 and meta.get_column("title").str.len_chars().min() > 0  # type: ignore[operator]
    assert all(1 <= len(c) <= 2 for c in meta.get_column("categories").to_list())
    lengths = raw.group_by("user").len().get_column("len")
    assert lengths.min() >= 5  # type: ignore[operator]
    # Within a user, time strictly increases in generation order.
    ts = raw.get_column("timestamp").to_numpy()
    users = raw.get_column("user").to_numpy()
    same = users[1:] == users[:-1]
    assert np.all(np.diff(ts)[same] > 0)
    # Zipf-like popularity: the top 10 % of items take a clearly larger share than 10 %.
    counts = np.sort(raw.get_column("item").value_counts().get_column("count").to_numpy())[::-1]
    assert counts[: len(counts) // 10].sum() / counts.sum() > 0.2


def successor_rate(p_sequential: float) -> tuple[float, float]:
    """How often the next item is the most frequent successor of the previous one, and the chance level."""
    # Sequels live inside a theme of a category: 8 categories of 10 items leave room for series of several parts.
    raw, _ = generate(SynthConfig(n_users=400, n_items=80, n_categories=8, seed=9, p_sequential=p_sequential))
    users = raw.get_column("user").to_numpy()
    items = raw.get_column("item").to_numpy()
    same = users[1:] == users[:-1]
    prev, nxt = items[:-1][same], items[1:][same]
    half = prev.size // 2  # learn the transitions on one half, measure on the other
    table: dict[str, dict[str, int]] = {}
    for p, n in zip(prev[:half], nxt[:half], strict=True):
        table.setdefault(p, {}).setdefault(n, 0)
        table[p][n] += 1
    best = {p: max(d, key=d.__getitem__) for p, d in table.items()}
    hits = np.mean([best.get(p) == n for p, n in zip(prev[half:], nxt[half:], strict=True)])
    popular = raw.get_column("item").value_counts().sort("count", descending=True).get_column("item")[0]
    chance = float(np.mean(nxt[half:] == popular))
    return float(hits), chance


def test_sequential_signal_is_measurable() -> None:
    hits, chance = successor_rate(0.7)
    assert hits > 3 * chance and hits > 0.3
    # Without transitions the "best successor" only finds the user's popular items; with them it finds far
    # more.
    no_signal, _ = successor_rate(0.0)
    assert hits > no_signal + 0.1


@pytest.fixture(scope="module")
def sample() -> tuple[pl.DataFrame, pl.DataFrame]:
    return generate(SynthConfig(n_users=400, n_items=200, seed=5))


def consecutive(raw: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair of a user's consecutive items (previous, next) and the time between them."""
    users = raw.get_column("user").to_numpy()
    items = raw.get_column("item").to_numpy()
    gaps = np.diff(raw.get_column("timestamp").to_numpy())
    same = users[1:] == users[:-1]
    return items[:-1][same], items[1:][same], gaps[same]


def test_sequels_follow_their_previous_part_not_the_reverse(sample: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    # Order only a sequence model sees: "Golden Harbor 2" comes right after "Golden Harbor", almost never before.
    raw, meta = sample
    series, part = {}, {}
    for item, title in zip(meta.get_column("item"), meta.get_column("title"), strict=True):
        words = title.split()
        numbered = len(words) == 4
        series[item] = (words[0], words[1], words[-1])
        part[item] = int(words[2]) if numbered else 1
    prev, nxt, _ = consecutive(raw)
    same = np.array([series[a] == series[b] for a, b in zip(prev, nxt, strict=True)])
    step = np.array([part[b] - part[a] for a, b in zip(prev, nxt, strict=True)])
    forward, backward = int(np.sum(same & (step == 1))), int(np.sum(same & (step == -1)))
    assert forward > 0.15 * prev.size and forward > 5 * backward


def test_recent_session_predicts_the_next_category_better_than_the_whole_history(
    sample: tuple[pl.DataFrame, pl.DataFrame],
) -> None:
    # Interests drift: for each user's last item, the category of the item before it beats the history's most
    # frequent category by a wide margin (a bag of items only knows the latter).
    raw, meta = sample
    category = dict(zip(meta.get_column("item"), meta.get_column("categories").list.first(), strict=True))
    recent = whole = 0
    for items in raw.group_by("user", maintain_order=True).agg("item").get_column("item").to_list():
        history, target = [category[i] for i in items[:-1]], category[items[-1]]
        recent += history[-1] == target
        values, counts = np.unique(history, return_counts=True)
        whole += values[np.argmax(counts)] == target
    n = raw.get_column("user").n_unique()
    assert recent / n > whole / n + 0.2


def test_sessions_show_in_the_gaps_and_keep_to_a_category(sample: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    raw, meta = sample
    category = dict(zip(meta.get_column("item"), meta.get_column("categories").list.first(), strict=True))
    prev, nxt, gaps = consecutive(raw)
    within = gaps < 6 * 3600  # items minutes apart, sessions days apart: nothing much in between
    assert 0.6 < within.mean() < 0.9 and np.mean((gaps > 6 * 3600) & (gaps < 12 * 3600)) < 0.05
    same = np.array([category[a] == category[b] for a, b in zip(prev, nxt, strict=True)])
    assert same[within].mean() > same[~within].mean() + 0.2


def test_items_sharing_metadata_are_consumed_together(sample: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    # The content signal: consecutive items share their category and a title word (the theme's) and a price band far
    # more often than random pairs, as much when the next item is in the long tail, where interactions are few.
    raw, meta = sample
    ids = meta.get_column("item").to_list()
    category = dict(zip(ids, meta.get_column("categories").list.first(), strict=True))
    words = {i: set(t.lower().split()) for i, t in zip(ids, meta.get_column("title"), strict=True)}
    log_price = dict(zip(ids, np.log(meta.get_column("price").to_numpy()), strict=True))
    prev, nxt, _ = consecutive(raw)
    shuffled = np.random.default_rng(0).permutation(nxt)

    def share(a: np.ndarray, b: np.ndarray) -> float:
        pairs = zip(a, b, strict=True)
        return float(np.mean([category[x] == category[y] and len(words[x] & words[y]) > 1 for x, y in pairs]))

    def price_gap(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.mean([abs(log_price[x] - log_price[y]) for x, y in zip(a, b, strict=True)]))

    chance = share(prev, shuffled)
    assert share(prev, nxt) > 5 * chance
    assert price_gap(prev, nxt) < 0.6 * price_gap(prev, shuffled)
    counts = raw.get_column("item").value_counts()
    rare = set(counts.filter(pl.col("count") <= counts.get_column("count").quantile(0.25)).get_column("item"))
    tail = np.array([b in rare for b in nxt])
    assert tail.sum() > 50 and share(prev[tail], nxt[tail]) > 5 * chance


def test_rejects_tiny_configs() -> None:
    with pytest.raises(ValueError, match="at least 10 items"):
        generate(SynthConfig(n_items=5))
