"""Team-draft interleaving: what it shows and whom it credits."""

from __future__ import annotations

import random

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from recengine.serving.interleave import interleave_items, team_draft

ranked = st.lists(st.integers(0, 30).map(lambda i: f"i{i}"), max_size=15, unique=True)


@settings(max_examples=300, deadline=None)
@given(a=ranked, b=ranked, k=st.integers(1, 20), seed=st.integers(0, 2**32))
def test_team_draft_properties(a: list[str], b: list[str], k: int, seed: int) -> None:
    items, credits = team_draft(a, b, k, random.Random(seed), teams=("A", "B"))
    # No duplicates, only items of the two lists, as many as there are (at most k).
    assert len(items) == len(set(items)) == len(credits)
    assert len(items) == min(k, len(set(a) | set(b)))
    team_a = [i for i, c in zip(items, credits, strict=True) if c == "A"]
    team_b = [i for i, c in zip(items, credits, strict=True) if c == "B"]
    assert set(team_a) <= set(a) and set(team_b) <= set(b)
    # Each team's picks keep its engine's order, and each pick is that engine's best item not yet shown.
    assert team_a == sorted(team_a, key=a.index) and team_b == sorted(team_b, key=b.index)
    for n, (item, team) in enumerate(zip(items, credits, strict=True)):
        own = a if team == "A" else b
        assert item == next(x for x in own if x not in items[:n])
    # Balanced: while both lists still have unshown items, the teams' counts differ by at most one.
    for n in range(len(items) + 1):
        left_a = [x for x in a if x not in items[:n]]
        left_b = [x for x in b if x not in items[:n]]
        if left_a and left_b:
            assert abs(credits[:n].count("A") - credits[:n].count("B")) <= 1


def test_identical_lists_split_the_credit_evenly() -> None:
    same = [f"i{i}" for i in range(10)]
    items, credits = team_draft(same, same, 10, random.Random(3), teams=("A", "B"))
    assert items == same  # both engines agree, so the answer is their list
    assert credits.count("A") == credits.count("B") == 5


def test_the_coin_decides_who_picks_first_and_is_fair() -> None:
    first = [team_draft(["x"], ["y"], 1, random.Random(s))[1][0] for s in range(2000)]
    assert 900 < first.count("a") < 1100


def test_one_list_running_out_lets_the_other_fill_the_answer() -> None:
    items, credits = team_draft(["a1"], ["b1", "b2", "b3", "b4"], 4, random.Random(0), teams=("A", "B"))
    assert sorted(items) == ["a1", "b1", "b2", "b3"] and credits.count("A") == 1


def test_interleave_items_credits_each_row_and_reranks() -> None:
    a = orjson.dumps([{"item_id": "x", "score": 9.0, "rank": 1}, {"item_id": "y", "score": 8.0, "rank": 2}])
    b = orjson.dumps([{"item_id": "y", "score": 0.9, "rank": 1}, {"item_id": "z", "score": 0.5, "rank": 2}])
    rows, credits = interleave_items(a, b, 3, "seed", ("ease", "transformer"))
    assert [r["rank"] for r in rows] == [1, 2, 3]
    assert [r["engine"] for r in rows] == credits
    assert {r["item_id"] for r in rows} == {"x", "y", "z"}
    for r in rows:  # the score is the one the credited engine gave
        expected = {"ease": {"x": 9.0, "y": 8.0}, "transformer": {"y": 0.9, "z": 0.5}}[r["engine"]]
        assert r["score"] == expected[r["item_id"]]
    assert interleave_items(a, b, 3, "seed", ("ease", "transformer")) == (rows, credits)  # seeded: reproducible
