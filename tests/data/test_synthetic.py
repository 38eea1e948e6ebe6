"""The synthetic generator: deterministic, shaped like real data, with a sequential signal."""

from __future__ import annotations

import numpy as np
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
    cfg = SynthConfig(n_users=100, n_items=60, seed=4, min_length=5)
    raw, meta = generate(cfg)
    assert raw.get_column("user").n_unique() == 100
    assert meta.height == 60 and meta.get_column("title").str.len_chars().min() > 0  # type: ignore[operator]
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
    raw, _ = generate(SynthConfig(n_users=400, n_items=80, seed=9, p_sequential=p_sequential))
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


def test_rejects_tiny_configs() -> None:
    with pytest.raises(ValueError, match="at least 10 items"):
        generate(SynthConfig(n_items=5))
