"""Cold-start evaluation: how well the item tower places items it never saw an interaction with.

A share of the items is hidden from training (their metadata stays in the catalogue; every interaction with them is
removed, and leave-one-out is redone on what is left). The model trains on the rest, then, for each user who did
interact with hidden items, ranks the hidden items from the user's remaining history; Recall@K is the share of the
user's hidden items in the top K. Baselines that see the same metadata: popularity within genre (the user's genre
shares, ties by genre popularity), global genre popularity, and a random order (expected value).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recengine.data.dataset import TEST, TRAIN, Dataset
from recengine.data.splits import leave_one_out
from recengine.errors import DataError
from recengine.evaluation import rank_metrics
from recengine.settings import NeuralSettings, TrainingSettings


def hide_items(dataset: Dataset, fraction: float, seed: int = 0) -> tuple[Dataset, np.ndarray]:
    """A copy of ``dataset`` without any interaction of a random ``fraction`` of the items, and those items."""
    if not 0.0 < fraction < 1.0:
        raise DataError(f"cold-start fraction must be in (0, 1), got {fraction}")
    present = np.flatnonzero(dataset.item_counts(max_split=TEST)[1:] > 0) + 1
    n_hide = max(1, round(fraction * present.size))
    if n_hide >= present.size:
        raise DataError(f"cannot hide {n_hide} of {present.size} items and still train")
    hidden = np.sort(np.random.default_rng(seed).choice(present, size=n_hide, replace=False))
    keep = ~np.isin(dataset.item, hidden)
    user = dataset.user[keep]
    train = Dataset(
        user=user,
        item=dataset.item[keep],
        timestamp=dataset.timestamp[keep],
        weight=dataset.weight[keep],
        split=leave_one_out(user),
        items=dataset.items,
        users=dataset.users,
        manifest={"source": {"cold_start_of": dataset.content_hash, "fraction": fraction, "seed": seed}},
    )
    return train, hidden


def cold_start_cases(dataset: Dataset, hidden: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per user with hidden-item interactions and some other history: (history without hidden items, hidden targets)."""
    is_hidden = np.isin(dataset.item, hidden)
    bounds = np.searchsorted(dataset.user, np.arange(dataset.n_users + 2), side="left")
    histories, targets = [], []
    for u in range(1, dataset.n_users + 1):
        a, b = bounds[u], bounds[u + 1]
        items = dataset.item[a:b].astype(np.int64)
        mask = is_hidden[a:b]
        if mask.any() and (~mask).any():
            histories.append(items[~mask])
            targets.append(np.unique(items[mask]))
    return histories, targets


def genre_scores(dataset: Dataset, train: Dataset, histories: list[np.ndarray], personal: bool) -> torch.Tensor:
    """(B, n_items + 1) scores from genres alone: Σ over an item's genres of the user's share of that genre
    (``personal``), with the genre's training popularity as the tie-break; or the genre popularity alone."""
    cats = dataset.items.categories
    if cats is None:
        raise DataError("cold-start baselines need item categories (genres) in the catalogue")
    vocab = {c: i for i, c in enumerate(dataset.items.category_vocab())}
    item_genre = np.zeros((dataset.n_items + 1, max(1, len(vocab))), dtype=np.float32)  # (N+1, G) multi-hot
    for i, cs in enumerate(cats):
        for c in cs:
            item_genre[i, vocab[c]] = 1.0
    counts = train.item_counts(max_split=TEST).astype(np.float32)
    genre_pop = counts @ item_genre
    genre_pop /= max(float(genre_pop.sum()), 1.0)
    pop_score = torch.from_numpy(item_genre @ genre_pop)  # (N+1,)
    if not personal:
        return pop_score.unsqueeze(0).repeat(len(histories), 1)
    shares = np.stack([item_genre[h].sum(0) / max(len(h), 1) for h in histories])  # (B, G)
    return torch.from_numpy(shares @ item_genre.T) + 1e-3 * pop_score  # (B, N+1)


def recall_among(scores: torch.Tensor, candidates: np.ndarray, targets: list[np.ndarray], k: int) -> float:
    """Mean Recall@k when only ``candidates`` can be ranked (ties broken at random, in expectation)."""
    masked = torch.full_like(scores, -torch.inf)
    cols = torch.from_numpy(candidates)
    masked[:, cols] = scores[:, cols]
    return float(rank_metrics(masked, targets, (k,))[f"recall@{k}"].mean())


def evaluate_cold_start(
    dataset: Dataset,
    config: NeuralSettings,
    training: TrainingSettings,
    tracking_dir: Path,
    fraction: float = 0.1,
    seed: int = 0,
    k: int = 20,
    progress: Callable[[str, int | None, int | None], None] | None = None,
) -> dict[str, Any]:
    """Hide ``fraction`` of the items, train the neural engine on the rest, and compare Recall@k on the hidden items."""
    from recengine.training.run import fit

    train, hidden = hide_items(dataset, fraction, seed)
    if not (train.split == TRAIN).any():
        raise DataError("cold start: nothing left to train on")
    engine = fit("neural", train, config, training, tracking_dir, progress=progress)
    histories, targets = cold_start_cases(dataset, hidden)
    if not histories:
        raise DataError("cold start: no user interacted with a hidden item and something else")
    model_r, full_r, pers_r, glob_r, rand_r = [], [], [], [], []
    flat = torch.zeros((1, dataset.n_items + 1))
    for start in range(0, len(histories), 256):
        hb, tb = histories[start : start + 256], targets[start : start + 256]
        n = len(hb)
        scores = engine.score(hb)
        model_r.append(recall_among(scores, hidden, tb, k) * n)
        full = scores.clone()
        for i, h in enumerate(hb):
            full[i, torch.from_numpy(h)] = -torch.inf
        full[:, 0] = -torch.inf
        full_r.append(float(rank_metrics(full, tb, (k,))[f"recall@{k}"].sum()))
        pers_r.append(recall_among(genre_scores(dataset, train, hb, True), hidden, tb, k) * n)
        glob_r.append(recall_among(genre_scores(dataset, train, hb, False), hidden, tb, k) * n)
        rand_r.append(recall_among(flat.expand(n, -1).clone(), hidden, tb, k) * n)
    n_users = len(histories)
    return {
        "fraction": fraction,
        "n_hidden_items": int(hidden.size),
        "n_users": n_users,
        f"model_recall@{k}": sum(model_r) / n_users,
        f"model_full_recall@{k}": sum(full_r) / n_users,
        f"genre_pop_recall@{k}": sum(pers_r) / n_users,
        f"global_genre_recall@{k}": sum(glob_r) / n_users,
        f"random_recall@{k}": sum(rand_r) / n_users,
        "train_valid_ndcg@10": engine.metrics.get("valid_ndcg@10"),
    }
