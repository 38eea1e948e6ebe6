"""The replay benchmark's protocol (benchmarks/replay.py): one global cut, every base row before every replayed one,
and the online metrics; the benchmark itself runs outside the test suite (``--quick`` for a smoke run)."""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from recengine.data.dataset import Dataset

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def replay() -> ModuleType:
    sys.path.insert(0, str(ROOT / "benchmarks"))  # replay.py imports its sibling provenance.py
    spec = importlib.util.spec_from_file_location("replay_bench", ROOT / "benchmarks" / "replay.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["replay_bench"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_the_cut_puts_every_base_row_before_every_replayed_event(replay: ModuleType, small_dataset: Dataset) -> None:
    tl = replay.timeline(small_dataset, "timestamps")
    assert tl.mode == "timestamps" and sorted(tl.order.tolist()) == list(range(small_dataset.n_interactions))
    stamps = small_dataset.timestamp[tl.order]
    assert np.all(np.diff(stamps) >= 0)  # global time order
    base, events = replay.cut(tl, 0.8)
    assert len(base) == int(0.8 * small_dataset.n_interactions) and len(base) + len(events) == len(tl.order)
    assert max(t for *_, t in base) < min(t for *_, t in events)
    assert all(2000 <= time.gmtime(t).tm_year < 2100 for *_, t in (base[0], events[-1]))  # the API's range
    # Each user's events keep their order across the cut.
    by_user: dict[str, list[str]] = {}
    for user, item, _ in [*base, *events]:
        by_user.setdefault(user, []).append(item)
    u = 5
    assert by_user[small_dataset.users.ids[u]] == small_dataset.items.ids.decode(
        small_dataset.item[small_dataset.user == u]
    )


def test_without_timestamps_every_user_keeps_the_first_part_of_their_sequence(
    replay: ModuleType, small_dataset: Dataset
) -> None:
    tl = replay.timeline(small_dataset, "position")
    base, _ = replay.cut(tl, 0.8)
    in_base: dict[str, int] = {}
    for user, _, _ in base:
        in_base[user] = in_base.get(user, 0) + 1
    lengths = np.bincount(small_dataset.user)[1:]
    shares = [in_base.get(small_dataset.users.ids[u + 1], 0) / n for u, n in enumerate(lengths)]
    assert min(shares) > 0.6 and max(shares) <= 1.0  # no user is all base or all replay, as a user-ordered cut would be
    assert np.mean(shares) == pytest.approx(0.8, abs=0.05)


def test_online_metrics(replay: ModuleType) -> None:
    assert replay.score(["a", "b", "c"], "a") == (1.0, 1.0)
    hit, gain = replay.score(["a", "b", "c"], "c")
    assert hit == 1.0 and gain == pytest.approx(0.5)
    assert replay.score(["a"] * 10 + ["z"], "z") == (0.0, 0.0)  # only the top 10 counts
    rps, inside = replay.rate_within([1.0, 2.0, 2.5, 9.0], [(0.0, 2.0), (8.0, 10.0)])
    assert inside == 3 and rps == pytest.approx(3 / 4)
