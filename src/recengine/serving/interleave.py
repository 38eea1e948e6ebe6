"""Team-draft interleaving (Radlinski, Kurup & Joachims, CIKM 2008): two engines' lists merged into one answer.

    items, credits = team_draft(list_a, list_b, k, random.Random(seed), teams=("ease", "transformer"))

Like two captains picking teams: in each round a coin decides which engine picks first, then each picks its
highest-ranked item not already shown; the item is credited to the engine that picked it. When one list runs out,
the other fills the rest. A click on an item is a vote for its team, and over a user's clicks the team with more
votes wins that user (``serving/readout.py`` tallies wins, ties and losses and runs the sign test). Because both
engines answer every request of every user, interleaving needs far fewer users than an A/B split to tell them apart.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import orjson


def team_draft(
    a: Sequence[str],
    b: Sequence[str],
    k: int,
    rng: random.Random,
    teams: tuple[str, str] = ("a", "b"),
) -> tuple[list[str], list[str]]:
    """Up to ``k`` distinct items from ``a`` and ``b`` and, for each, the team (``teams[0]`` or ``teams[1]``) that
    picked it. Every round both teams pick once (the coin only orders them), so the teams' counts never differ by
    more than one while both lists last."""
    lists = (a, b)
    cursor = [0, 0]
    picked = [0, 0]
    shown: set[str] = set()
    items: list[str] = []
    credits: list[str] = []

    def next_of(team: int) -> str | None:
        lst = lists[team]
        while cursor[team] < len(lst) and lst[cursor[team]] in shown:
            cursor[team] += 1
        return lst[cursor[team]] if cursor[team] < len(lst) else None

    while len(items) < k:
        if picked[0] < picked[1]:
            team = 0
        elif picked[1] < picked[0]:
            team = 1
        else:
            team = 0 if rng.random() < 0.5 else 1
        item = next_of(team)
        if item is None:
            team = 1 - team
            item = next_of(team)
            if item is None:
                break
        shown.add(item)
        items.append(item)
        credits.append(teams[team])
        picked[team] += 1
    return items, credits


def interleave_items(
    a_json: bytes, b_json: bytes, k: int, seed: str, teams: tuple[str, str]
) -> tuple[list[dict[str, Any]], list[str]]:
    """Two engines' formatted answers (``[{item_id, score, rank, …}, …]``) interleaved: each item keeps the fields
    its team's engine gave it (the score is that engine's, not comparable across teams), gets its new rank and the
    ``engine`` it is credited to. The coin flips are seeded by ``seed`` (the recommendation id), so an answer can
    be reproduced."""
    rows_a: list[dict[str, Any]] = orjson.loads(a_json)
    rows_b: list[dict[str, Any]] = orjson.loads(b_json)
    by_team = ({r["item_id"]: r for r in rows_a}, {r["item_id"]: r for r in rows_b})
    items, credits = team_draft(
        [r["item_id"] for r in rows_a], [r["item_id"] for r in rows_b], k, random.Random(seed), teams
    )
    out = []
    for rank, (item, team) in enumerate(zip(items, credits, strict=True), start=1):
        row = dict(by_team[0 if team == teams[0] else 1][item])
        row["rank"] = rank
        row["engine"] = team
        out.append(row)
    return out, credits
