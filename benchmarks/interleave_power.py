"""How many users does each method need to tell two engines apart: an A/B split, or team-draft interleaving?

    .venv/bin/python benchmarks/interleave_power.py                  # ML-100K ($RECENGINE_BENCH_DATA), ~1 min
    .venv/bin/python benchmarks/interleave_power.py --reps 1000 --output benchmarks/results/interleave.md

An offline simulation on a real data set, with the service's own code for the merge and the tests
(``serving/interleave.py``, ``serving/readout.py``). Each user of the leave-one-out test split is shown a top 10 and
clicks the shown item that is their held-out next item, if it is shown (the online HR@10 click model of the
readout). For a pair of engines A and B:

- **A/B split**: n users, half shown A's top 10, half B's; the two-proportion z-test on the hit rates detects the
  better engine when p < 0.05 and the sign is right;
- **interleaving**: n users, each shown the team draft of A's and B's top 10 (a fresh coin per answer); a click is a
  win for the team that placed the item; the exact sign test on wins against losses detects the better engine when
  p < 0.05 and the better engine wins more.

Power at n = the share of ``--reps`` bootstrap samples of n users (drawn with replacement from the test users) in
which the better engine is detected; the table gives the smallest n on a doubling grid with at least 80 % power.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from provenance import provenance_lines, write_report

ROOT = Path(__file__).resolve().parents[1]
K = 10
COINS = 16
"""Interleavings simulated per user (coin sequences); a bootstrap draw picks one of them."""
GRID = [25 * 2**i for i in range(14)]  # 25 … 204 800 users
POWER = 0.8
ALPHA = 0.05


def load(name: str) -> Any:
    from recengine.data.readers import read_interactions
    from recengine.data.transforms import PrepareOptions, build_dataset

    root = Path(os.environ.get("RECENGINE_BENCH_DATA", ROOT.parent / "shared" / "data"))
    paths = {"ml-100k": (root / "ml-100k" / "u.data", "movielens")}
    path, fmt = paths[name]
    raw, _ = read_interactions(path, fmt=fmt, on_invalid="fail")
    return build_dataset(raw, None, PrepareOptions(source={"path": str(path), "format": fmt}))


def engines(dataset: Any) -> dict[str, Any]:
    from recengine.engines.ease import EASE
    from recengine.engines.popularity import Popularity
    from recengine.settings import EaseSettings

    return {
        "popularity": Popularity.fit(dataset),
        "ease λ=300": EASE.fit(dataset, EaseSettings(lambdas=[300.0])),
        "ease λ=3000": EASE.fit(dataset, EaseSettings(lambdas=[3000.0])),
    }


def top_lists(engine: Any, histories: list[np.ndarray]) -> np.ndarray:
    out = []
    for start in range(0, len(histories), 256):
        items, _ = engine.recommend(histories[start : start + 256], K)
        out.append(items)
    return np.concatenate(out)


def outcomes(a: np.ndarray, b: np.ndarray, targets: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(hit A, hit B, interleaving outcome per user and coin: +1 a click credited to A, -1 to B, 0 no click)."""
    from recengine.serving.interleave import team_draft

    hit_a = (a == targets[:, None]).any(axis=1)
    hit_b = (b == targets[:, None]).any(axis=1)
    rng = random.Random(seed)
    mixed = np.zeros((len(targets), COINS), dtype=np.int8)
    for u, target in enumerate(targets):
        la, lb = [int(x) for x in a[u] if x], [int(x) for x in b[u] if x]
        for c in range(COINS):
            items, credits = team_draft(la, lb, K, rng)
            if int(target) in items:
                mixed[u, c] = 1 if credits[items.index(int(target))] == "a" else -1
    return hit_a, hit_b, mixed


def power(
    hit_a: np.ndarray, hit_b: np.ndarray, mixed: np.ndarray, n: int, reps: int, rng: np.random.Generator
) -> tuple[float, float]:
    from recengine.serving.readout import sign_test, two_proportion_z

    b_better = hit_b.mean() > hit_a.mean()
    ab = il = 0
    n_users = len(hit_a)
    for _ in range(reps):
        half = n // 2
        xa = int(hit_a[rng.integers(0, n_users, half)].sum())
        xb = int(hit_b[rng.integers(0, n_users, n - half)].sum())
        test = two_proportion_z(xb, n - half, xa, half)
        if test is not None and test[1] < ALPHA and (test[0] > 0) == b_better:
            ab += 1
        draw = mixed[rng.integers(0, n_users, n), rng.integers(0, COINS, n)]
        wins_a, wins_b = int((draw == 1).sum()), int((draw == -1).sum())
        if sign_test(wins_a, wins_b) < ALPHA and (wins_b > wins_a) == b_better and wins_a != wins_b:
            il += 1
    return ab / reps, il / reps


def needed(curve: dict[int, float]) -> str:
    n = next((n for n in GRID if curve.get(n, 0.0) >= POWER), None)
    return f"{n:,}" if n is not None else f"> {GRID[-1]:,}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="ml-100k", choices=["ml-100k"])
    parser.add_argument("--reps", type=int, default=400, help="bootstrap samples per sample size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "interleave.md")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    dataset = load(args.dataset)
    _, histories, targets_list = dataset.eval_cases("test")
    targets = np.asarray([t[0] for t in targets_list], dtype=np.int64)
    models = engines(dataset)
    lists = {name: top_lists(engine, histories) for name, engine in models.items()}
    pairs = [("popularity", "ease λ=300"), ("ease λ=3000", "ease λ=300")]
    rng = np.random.default_rng(args.seed)
    rows, curves = [], []
    for a, b in pairs:
        hit_a, hit_b, mixed = outcomes(lists[a], lists[b], targets, args.seed)
        clicked = mixed != 0
        b_share = float((mixed == -1).sum() / max(1, clicked.sum()))
        ab_curve: dict[int, float] = {}
        il_curve: dict[int, float] = {}
        for n in GRID:
            ab_curve[n], il_curve[n] = power(hit_a, hit_b, mixed, n, args.reps, rng)
            if ab_curve[n] >= 0.99 and il_curve[n] >= 0.99:
                break
        rows.append(
            f"| {a} vs {b} | {hit_a.mean():.4f} | {hit_b.mean():.4f} | {clicked.mean():.3f} | {b_share:.3f} | "
            f"{needed(ab_curve)} | {needed(il_curve)} |"
        )
        grid = [n for n in GRID if n in ab_curve]
        curves.append(
            f"\n{a} vs {b}:\n\n| users | " + " | ".join(f"{n:,}" for n in grid) + " |\n|---|"
            + "---|" * len(grid) + "\n| A/B split | " + " | ".join(f"{ab_curve[n]:.2f}" for n in grid)
            + " |\n| interleaving | " + " | ".join(f"{il_curve[n]:.2f}" for n in grid) + " |"
        )  # fmt: skip
    seconds = time.perf_counter() - started
    command = "python benchmarks/interleave_power.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = "\n".join(
        [
            "# A/B split or interleaving: users needed to tell two engines apart",
            "",
            *provenance_lines(command, threads=1),
            "",
            f"{args.dataset}: {len(targets)} test users (leave-one-out), top {K}; a user clicks the shown item that is "
            f"their held-out next item. Power: share of {args.reps} bootstrap samples of n users in which the better "
            f"engine (B) is found at p < {ALPHA} (A/B: two-proportion z-test on HR@{K}, n/2 users per arm; "
            "interleaving: exact sign test on per-user wins, one team-draft answer per user). "
            f"Users needed: the smallest n of a doubling grid with power ≥ {POWER:.0%}. {seconds:.0f} s.",
            "",
            f"| engines (A vs B) | HR@{K} A | HR@{K} B | clicking users (interleaved) | clicks won by B | "
            "users needed, A/B split | users needed, interleaving |",
            "|---|---|---|---|---|---|---|",
            *rows,
            "",
            "Power by number of users:",
            *curves,
            "",
        ]
    )
    print(text)
    write_report(args.output, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
