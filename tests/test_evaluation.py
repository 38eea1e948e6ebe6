from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from recengine.data.dataset import Dataset
from recengine.evaluation import evaluate, mask_scores, rank_metrics


def metrics_for(
    scores: list[list[float]], targets: list[list[int]], ks: tuple[int, ...] = (1, 2, 3)
) -> dict[str, list[float]]:
    out = rank_metrics(torch.tensor(scores), [np.asarray(t) for t in targets], ks)
    return {k: [round(float(x), 6) for x in v] for k, v in out.items()}


def test_single_target_by_hand() -> None:
    # Items 1..4 (0 is padding, already -inf). Target 3 is second best → rank 1.
    m = metrics_for([[-math.inf, 0.9, 0.1, 0.5, 0.3]], [[3]])
    assert m["hr@1"] == [0.0]
    assert m["hr@2"] == [1.0]
    assert m["recall@2"] == [1.0]
    assert m["ndcg@2"] == [round(1 / math.log2(3), 6)]
    assert m["mrr@2"] == [0.5]
    assert m["mrr@1"] == [0.0]


def test_multiple_targets_by_hand() -> None:
    # Targets 1 (rank 0) and 4 (rank 2) out of 4 items.
    m = metrics_for([[-math.inf, 0.9, 0.5, 0.1, 0.3]], [[1, 4]])
    assert m["hr@1"] == [1.0]
    assert m["recall@1"] == [0.5]
    assert m["recall@3"] == [1.0]
    idcg3 = 1 + 1 / math.log2(3)
    assert m["ndcg@3"] == [round((1 + 1 / math.log2(4)) / idcg3, 6)]
    assert m["ndcg@2"] == [round(1 / (1 + 1 / math.log2(3)), 6)]
    assert m["mrr@3"] == [1.0]


def test_ties_are_broken_at_random_in_expectation() -> None:
    # Four items tied: the target takes each rank 0..3 with probability 1/4.
    m = metrics_for([[-math.inf, 1.0, 1.0, 1.0, 1.0]], [[2]])
    assert m["hr@1"] == [0.25]
    assert m["hr@2"] == [0.5]
    assert m["ndcg@2"] == [round((1 + 1 / math.log2(3)) / 4, 6)]
    assert m["mrr@3"] == [round((1 + 1 / 2 + 1 / 3) / 4, 6)]


def test_excluded_target_is_never_a_hit() -> None:
    scores = torch.tensor([[0.0, 0.9, 0.8, 0.7]])
    mask_scores(scores, [np.array([2])])
    assert scores[0, 0] == -math.inf and scores[0, 2] == -math.inf
    m = rank_metrics(scores, [np.array([2])], (3,))
    assert float(m["hr@3"][0]) == 0.0
    assert float(m["ndcg@3"][0]) == 0.0


def test_batch_rows_are_independent() -> None:
    m = metrics_for([[-math.inf, 0.9, 0.1], [-math.inf, 0.1, 0.9]], [[1], [1]], ks=(1,))
    assert m["hr@1"] == [1.0, 0.0]


def test_evaluate_perfect_and_worst_scorers(small_dataset: Dataset) -> None:
    _, _, targets = small_dataset.eval_cases("test")
    lookup = iter(targets)

    def oracle(histories: list[np.ndarray]) -> torch.Tensor:
        out = torch.zeros((len(histories), small_dataset.n_items + 1))
        for i in range(len(histories)):
            out[i, torch.as_tensor(next(lookup))] = 1.0
        return out

    m = evaluate(oracle, small_dataset, ks=(10,), batch_size=64)
    # A target repeated from the history is excluded and cannot be hit; every other one ranks first.
    users, histories, targets = small_dataset.eval_cases("test")
    reachable = np.mean([t[0] not in set(h.tolist()) for h, t in zip(histories, targets, strict=True)])
    assert m["hr@10"] == pytest.approx(reachable)
    assert m["mrr@10"] == pytest.approx(reachable)
    assert m["n_users"] == len(users)
    assert m["dataset_hash"] == small_dataset.content_hash
    assert 0 < m["coverage@10"] <= 1


def test_evaluate_subset_and_shape_check(small_dataset: Dataset) -> None:
    def constant(histories: list[np.ndarray]) -> torch.Tensor:
        return torch.ones((len(histories), small_dataset.n_items + 1))

    m = evaluate(constant, small_dataset, split="valid", ks=(5, 10), max_users=50)
    assert m["n_users"] == 50
    # Everything tied: a reachable target lands in the top K with probability K / (candidates), where the
    # candidates are the items outside the user's history; the 50 users are the evenly spread subset.
    _, histories, targets = small_dataset.eval_cases("valid")
    pick = np.linspace(0, len(histories) - 1, 50).astype(np.int64)
    for k in (5, 10):
        expected = []
        for i in pick:
            seen = set(histories[i].tolist())
            candidates = small_dataset.n_items - len(seen)
            reachable = any(t not in seen for t in targets[i].tolist())
            expected.append(min(k, candidates) / candidates if reachable else 0.0)
        assert m[f"hr@{k}"] == pytest.approx(float(np.mean(expected)), rel=1e-6)
    assert 0 < m["hr@5"] < m["hr@10"] < 0.2

    def wrong(histories: list[np.ndarray]) -> torch.Tensor:
        return torch.ones((len(histories), 3))

    with pytest.raises(ValueError, match="shape"):
        evaluate(wrong, small_dataset)


def test_nan_scores_are_misses_not_perfect_hits() -> None:
    nan = math.nan
    m = metrics_for([[-math.inf, nan, nan, nan, nan]], [[2]], ks=(1, 4))
    assert m["hr@1"] == [0.0] and m["ndcg@1"] == [0.0] and m["hr@4"] == [0.0] and m["mrr@4"] == [0.0]
    # +inf on the target is no better: a diverged model is never rewarded.
    assert metrics_for([[-math.inf, 0.2, math.inf, 0.1, 0.3]], [[2]], ks=(1,))["hr@1"] == [0.0]


def test_nan_candidates_rank_above_a_finite_target() -> None:
    # Two NaN candidates cannot be ordered below the target: it ranks third (0-based rank 2), not first.
    m = metrics_for([[-math.inf, math.nan, 0.5, math.nan, 0.1]], [[2]], ks=(1, 2, 3))
    assert m["hr@1"] == [0.0] and m["hr@2"] == [0.0] and m["hr@3"] == [1.0]


def test_evaluate_counts_users_with_non_finite_target_scores(small_dataset: Dataset) -> None:
    def diverged(histories: list[np.ndarray]) -> torch.Tensor:
        return torch.full((len(histories), small_dataset.n_items + 1), math.nan)

    out = evaluate(diverged, small_dataset, split="valid", ks=(1, 10))
    assert out["hr@1"] == 0.0 and out["ndcg@10"] == 0.0
    # Every user whose target is not already in their history (excluded, -inf) had a NaN target score.
    _, histories, targets = small_dataset.eval_cases("valid")
    fresh = sum(not set(t.tolist()) <= set(h.tolist()) for h, t in zip(histories, targets, strict=True))
    assert out["non_finite_users"] == fresh > 0
    assert evaluate(lambda h: torch.rand(len(h), small_dataset.n_items + 1), small_dataset)["non_finite_users"] == 0
