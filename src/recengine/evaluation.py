"""Full-ranking evaluation: every item is a candidate, the user's history is excluded.

For each user with targets ``T`` (one under leave-one-out), the rank of a target is the number of candidate items
scored strictly higher than it, with ties among equal scores broken uniformly at random (in expectation; see
:func:`rank_metrics`). From the ranks:

- ``hr@K``      1 if any target ranks below K (= Recall@K when there is one target)
- ``recall@K``  share of targets ranked below K
- ``ndcg@K``    DCG of the hit targets over the ideal DCG of min(|T|, K) hits
- ``mrr@K``     1 / (best rank + 1) when it is below K, else 0 (the best target's, with several)
- ``coverage@K``   share of the catalogue that appears in at least one top-K list
- ``popularity@K`` mean training count of the recommended items, over the mean count of all items
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from recengine.data.dataset import TRAIN, Dataset

Scorer = Callable[[Sequence[np.ndarray]], np.ndarray | torch.Tensor]
"""Maps a batch of histories (item index arrays) to scores of shape (B, n_items + 1); column 0 is padding."""


def mask_scores(scores: torch.Tensor, histories: Sequence[np.ndarray]) -> torch.Tensor:
    """Set padding and every history item to -inf, in place; returns ``scores``.

    Indices that name no column (negative or past the last item) are skipped: there is nothing to hide, and a
    negative index would otherwise wrap around onto the last items.
    """
    scores[:, 0] = -torch.inf
    if not histories:
        return scores
    rows = np.concatenate([np.full(len(h), i, dtype=np.int64) for i, h in enumerate(histories)])
    cols = np.concatenate([np.asarray(h, dtype=np.int64) for h in histories])
    named = (cols > 0) & (cols < scores.shape[1])
    if named.any():
        scores[torch.from_numpy(rows[named]), torch.from_numpy(cols[named])] = -torch.inf
    return scores


def rank_metrics(scores: torch.Tensor, targets: Sequence[np.ndarray], ks: Sequence[int]) -> dict[str, torch.Tensor]:
    """Per-user metrics from masked scores (B, N) and each user's target items. Returns name → (B,) tensor.

    Ties are broken uniformly at random, in expectation: a target with ``g`` items strictly above it and ``e`` other
    items scored equal takes each rank in ``g … g+e`` with probability 1/(e+1). A constant scorer therefore earns
    exactly what a random order among equals would, neither more nor less.
    """
    bsz = scores.shape[0]
    t_max = max(len(t) for t in targets)
    tgt = torch.zeros((bsz, t_max), dtype=torch.long)
    valid = torch.zeros((bsz, t_max), dtype=torch.bool)
    for i, t in enumerate(targets):
        tgt[i, : len(t)] = torch.as_tensor(t, dtype=torch.long)
        valid[i, : len(t)] = True
    tscore = scores.gather(1, tgt)  # (B, T)
    # NaN compares false with everything: a NaN candidate would rank below every target, and a NaN target above
    # every candidate (an all-NaN model would score HR@1 = 1). NaN candidates count as ranked above the target.
    n_nan = torch.isnan(scores).sum(1, keepdim=True)  # (B, 1)
    # One target column at a time keeps memory at (B, N).
    above = torch.stack([(scores > tscore[:, j : j + 1]).sum(1) for j in range(t_max)], dim=1) + n_nan  # (B, T)
    equal = torch.stack([(scores == tscore[:, j : j + 1]).sum(1) for j in range(t_max)], dim=1) - 1
    # A target excluded as history (score -inf), a non-finite target score or a padding slot is never a hit.
    never = ~valid | ~torch.isfinite(tscore)
    above = torch.where(never, torch.full_like(above, 1 << 30), above)
    equal = torch.where(never, torch.zeros_like(equal), equal).clamp(min=0)
    n_t = valid.sum(1).float()
    out: dict[str, torch.Tensor] = {}
    for k in ks:
        ranks = torch.arange(k + 1, dtype=torch.float32)
        # cum_x[n] = Σ_{r<n} x(r) for r < k: expected sums over a tie range become two look-ups.
        cum_dcg = torch.cat([torch.zeros(1), torch.cumsum(1.0 / torch.log2(ranks[:k] + 2.0), 0)])
        cum_rr = torch.cat([torch.zeros(1), torch.cumsum(1.0 / (ranks[:k] + 1.0), 0)])
        lo = above.clamp(max=k)
        hi = (above + equal + 1).clamp(max=k)
        share = 1.0 / (equal.float() + 1.0)
        p_hit = (hi - lo).float() * share  # (B, T) probability that the target lands in the top k
        gain = (cum_dcg[hi] - cum_dcg[lo]) * share
        rr = (cum_rr[hi] - cum_rr[lo]) * share
        ideal_n = torch.clamp(n_t, max=k).long()
        idcg = cum_dcg[ideal_n]
        out[f"hr@{k}"] = p_hit.max(1).values
        out[f"recall@{k}"] = p_hit.sum(1) / n_t
        out[f"ndcg@{k}"] = gain.sum(1) / idcg
        out[f"mrr@{k}"] = rr.max(1).values
    return out


@dataclass(frozen=True)
class PerUser:
    """Each scored user's figures, in the order ``evaluate`` scored them (the same for every scorer on one data
    set and split, so two models' arrays pair up user by user)."""

    users: np.ndarray
    """(U,) user indices."""
    history_length: np.ndarray
    """(U,) items in the history the user was scored from."""
    metrics: dict[str, np.ndarray]
    """name (``hr@10``, ``ndcg@10``, …) → (U,) float64."""
    recommended_k: int
    """The cut-off of ``recommended``: the largest of ``ks`` not above 10 (or the smallest of them)."""
    recommended: np.ndarray
    """(n_items + 1,) how often each item appeared in a top-``recommended_k`` list (index 0 unused)."""


def evaluate(
    scorer: Scorer,
    dataset: Dataset,
    split: str = "test",
    ks: Sequence[int] = (10, 20),
    batch_size: int = 512,
    max_users: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    per_user: bool = False,
) -> dict[str, Any]:
    """Score every evaluation user of ``split`` with ``scorer`` and average the metrics.

    Returns flat keys (``hr@10``, ``ndcg@10``, …, ``coverage@10``, ``popularity@10``, ``n_users`` (users
    scored), ``n_users_without_history`` (users of the split with no earlier interaction, left out of every
    average), ``non_finite_users`` (users whose target score was NaN or +inf: misses), ``dataset_hash``).
    With ``per_user`` it also holds ``"per_user"``: a :class:`PerUser` (not JSON; the reports read it).
    """
    users, histories, targets = dataset.eval_cases(split)
    # A user with nothing before the split (a temporal split's newcomer) has no history to rank from: the
    # service answers such a user with popularity (the routing floor), whatever the engine. Left out of the
    # averages for every engine alike, so engines stay comparable, and counted in ``n_users_without_history``.
    with_history = [i for i, h in enumerate(histories) if len(h)]
    n_without_history = len(histories) - len(with_history)
    if n_without_history:
        users = users[with_history]
        histories = [histories[i] for i in with_history]
        targets = [targets[i] for i in with_history]
    if max_users is not None and len(users) > max_users:
        # A fixed, evenly spread subset keeps validation during training cheap and repeatable.
        pick = np.linspace(0, len(users) - 1, max_users).astype(np.int64)
        users = users[pick]
        histories = [histories[i] for i in pick]
        targets = [targets[i] for i in pick]
    ks = sorted(set(int(k) for k in ks))
    kmax = max(ks)
    counts = torch.from_numpy(dataset.item_counts(max_split=TRAIN).astype(np.float32))
    mean_count = float(counts[1:].mean()) if dataset.n_items else 1.0
    sums: dict[str, float] = {}
    seen = [torch.zeros(dataset.n_items + 1, dtype=torch.bool) for _ in ks]
    pop_sums = [0.0 for _ in ks]
    non_finite = 0  # users with a NaN or +inf target score: counted as misses, reported so training can refuse
    n = len(histories)
    rec_k = max([k for k in ks if k <= 10] or [ks[0]])
    rec_j = ks.index(rec_k)
    recommended = np.zeros(dataset.n_items + 1, dtype=np.int64)
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, n, batch_size):
        hb = histories[start : start + batch_size]
        tb = targets[start : start + batch_size]
        raw = scorer(hb)
        scores = torch.as_tensor(raw, dtype=torch.float32).clone()
        if scores.shape != (len(hb), dataset.n_items + 1):
            raise ValueError(
                f"scorer returned shape {tuple(scores.shape)}, expected ({len(hb)}, {dataset.n_items + 1})"
            )
        mask_scores(scores, hb)
        for i, t in enumerate(tb):
            ts = scores[i, torch.as_tensor(t, dtype=torch.long)]
            non_finite += int(bool((torch.isnan(ts) | torch.isposinf(ts)).any()))
        for name, values in rank_metrics(scores, tb, ks).items():
            sums[name] = sums.get(name, 0.0) + float(values.sum())
            if per_user:
                parts.setdefault(name, []).append(values.double().numpy())
        top = torch.topk(scores, min(kmax, dataset.n_items), dim=1).indices
        for j, k in enumerate(ks):
            topk = top[:, :k]
            seen[j][topk.reshape(-1)] = True
            pop_sums[j] += float(counts[topk].mean(1).sum())
            if per_user and j == rec_j:
                # Only real recommendations: a slot whose score is -inf (fewer candidates than k) holds no item.
                real = ~torch.isneginf(torch.gather(scores, 1, topk))
                recommended += np.bincount(topk[real].numpy(), minlength=dataset.n_items + 1)
        if progress is not None:
            progress(min(start + batch_size, n), n)
    result: dict[str, Any] = {name: total / max(1, n) for name, total in sorted(sums.items())}
    for j, k in enumerate(ks):
        seen[j][0] = False
        result[f"coverage@{k}"] = float(seen[j].sum()) / max(1, dataset.n_items)
        result[f"popularity@{k}"] = pop_sums[j] / max(1, n) / max(mean_count, 1e-12)
    result["n_users"] = n
    result["non_finite_users"] = non_finite
    result["n_users_without_history"] = n_without_history
    result["split"] = split
    result["dataset_hash"] = dataset.content_hash
    if per_user:
        result["per_user"] = PerUser(
            users=np.asarray(users, dtype=np.int64),
            history_length=np.asarray([len(h) for h in histories], dtype=np.int64),
            metrics={
                name: np.concatenate(parts[name]) if parts.get(name) else np.zeros(0)
                for name in sorted(f"{m}@{k}" for m in ("hr", "recall", "ndcg", "mrr") for k in ks)
            },
            recommended_k=rec_k,
            recommended=recommended,
        )
    return result
