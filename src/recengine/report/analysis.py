"""The figures of an evaluation report, as plain numbers: no plotting, no HTML here.

run = evaluate_model(Path("artifacts/transformer/v1"), dataset)      # one full-ranking pass, per-user figures
curves(run)                  # HR@K and NDCG@K for K = 1 … 50
by_history_length([runs])    # per-user NDCG@10 in buckets of history length, with 95 % intervals
popularity_bias(run, dataset)   # coverage, popularity@K, share of slots per item-popularity decile
training_curves(run)         # the validation figures per epoch, from the artifact's metrics.json
dataset_statistics(dataset)  # users, items, sequence lengths, long tail
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recengine.data.dataset import TRAIN, Dataset
from recengine.errors import ArtifactError
from recengine.evaluation import PerUser, evaluate

MAX_K = 50
"""The curves run over K = 1 … MAX_K (fewer when the catalogue is smaller)."""
HEADLINE_K = 10
#: Lower edges of the history-length buckets (a user with length L falls in the last edge ≤ L).
LENGTH_EDGES: tuple[int, ...] = (1, 3, 6, 11, 21, 51, 101)


@dataclass
class ModelRun:
    """One model evaluated on one data set split, with everything the report shows of it."""

    label: str
    """``engine`` (``engine version`` when several runs share an engine)."""
    engine: str
    version: str
    path: Path | None
    split: str
    metrics: dict[str, Any]
    """``evaluate``'s flat figures at K = 1 … MAX_K."""
    per_user: PerUser
    artifact_metrics: dict[str, Any] = field(default_factory=dict)
    """The artifact's metrics.json: training summary, validation history, its own test figures."""


def evaluate_model(
    model_dir: Path,
    dataset: Dataset,
    split: str = "test",
    progress: Callable[[int, int], None] | None = None,
) -> ModelRun:
    """Load the model at ``model_dir`` and evaluate it on ``split`` at every K up to :data:`MAX_K`."""
    from recengine.engines import load_engine

    engine = load_engine(model_dir)
    if len(engine.item_ids) != dataset.n_items or engine.item_ids.ids != dataset.items.ids.ids:
        raise ArtifactError(f"{model_dir}: the model's item vocabulary does not match the data set at {dataset.path}")
    return run_scorer(
        engine.score,
        dataset,
        label=engine.name,
        engine=engine.name,
        version=engine.version,
        path=Path(model_dir),
        split=split,
        artifact_metrics=engine.metrics,
        progress=progress,
    )


def run_scorer(
    scorer: Any,
    dataset: Dataset,
    *,
    label: str,
    engine: str,
    version: str,
    path: Path | None = None,
    split: str = "test",
    artifact_metrics: dict[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
    extra_ks: Sequence[int] = (),
) -> ModelRun:
    """Evaluate any scorer (``evaluation.Scorer``) for the report."""
    ks = sorted(set(range(1, min(MAX_K, max(1, dataset.n_items)) + 1)) | {int(k) for k in extra_ks})
    metrics = evaluate(scorer, dataset, split=split, ks=ks, progress=progress, per_user=True)
    per_user = metrics.pop("per_user")
    return ModelRun(label, engine, version, path, split, metrics, per_user, dict(artifact_metrics or {}))


def label_runs(runs: Sequence[ModelRun]) -> None:
    """Give each run a distinct label: the engine's name, with the version where two runs share an engine."""
    names = [r.engine for r in runs]
    for run in runs:
        run.label = run.engine if names.count(run.engine) == 1 else f"{run.engine} {run.version}"
    seen: dict[str, int] = {}
    for run in runs:  # the same artifact twice: number them
        n = seen[run.label] = seen.get(run.label, 0) + 1
        if n > 1:
            run.label = f"{run.label} #{n}"


# ---- accuracy ------------------------------------------------------------------------------------------------------
def ks_of(run: ModelRun) -> list[int]:
    return sorted(int(k.split("@")[1]) for k in run.metrics if k.startswith("hr@"))


def curves(run: ModelRun) -> dict[str, list[float]]:
    """``{"k": [1 …], "hr": […], "ndcg": […]}``: mean HR@K and NDCG@K for each K."""
    ks = ks_of(run)
    return {
        "k": [float(k) for k in ks],
        "hr": [float(run.metrics[f"hr@{k}"]) for k in ks],
        "ndcg": [float(run.metrics[f"ndcg@{k}"]) for k in ks],
    }


@dataclass(frozen=True)
class Bucket:
    label: str
    lo: int
    hi: int | None
    """Inclusive bounds of history length (None: no upper bound)."""
    n_users: int
    mean: dict[str, float]
    """run label → mean NDCG@10 of the bucket's users."""
    half_width: dict[str, float]
    """run label → half the width of a normal 95 % interval of that mean."""
    best: str
    """The run with the highest mean; ``as_good`` lists those whose interval reaches it."""
    as_good: tuple[str, ...]


def _bucket_bounds(lengths: np.ndarray) -> list[tuple[int, int | None]]:
    top = int(lengths.max()) if lengths.size else 0
    edges = [e for e in LENGTH_EDGES if e <= max(top, 1)]
    bounds: list[tuple[int, int | None]] = []
    for i, lo in enumerate(edges):
        hi = edges[i + 1] - 1 if i + 1 < len(edges) else None
        bounds.append((lo, hi))
    return bounds


def by_history_length(runs: Sequence[ModelRun], metric: str = f"ndcg@{HEADLINE_K}") -> list[Bucket]:
    """Per-user ``metric`` in buckets of history length, for runs evaluated on the same users."""
    if not runs:
        return []
    lengths = runs[0].per_user.history_length
    buckets = []
    for lo, hi in _bucket_bounds(lengths):
        inside = (lengths >= lo) & (lengths <= (hi if hi is not None else np.iinfo(np.int64).max))
        n = int(inside.sum())
        if n == 0:
            continue
        mean, half = {}, {}
        for run in runs:
            values = run.per_user.metrics.get(metric, np.zeros(len(lengths)))[inside]
            mean[run.label] = float(values.mean())
            half[run.label] = float(1.96 * values.std(ddof=1) / np.sqrt(n)) if n > 1 else 0.0
        best = max(mean, key=lambda label: mean[label])
        as_good = tuple(
            label for label in mean if label != best and mean[label] + half[label] >= mean[best] - half[best]
        )
        label = f"{lo}" if hi == lo else (f"{lo}–{hi}" if hi is not None else f"{lo}+")
        buckets.append(Bucket(label, lo, hi, n, mean, half, best, as_good))
    return buckets


# ---- catalogue coverage and popularity bias ------------------------------------------------------------------------
@dataclass(frozen=True)
class PopularityBias:
    k: int
    coverage: dict[int, float]
    """K → share of the catalogue in at least one top-K list."""
    popularity: dict[int, float]
    """K → mean training count of recommended items over the catalogue's mean count (1 = unbiased)."""
    decile_share: list[float]
    """Share of the top-``k`` slots that went to each decile of items by training popularity (most popular
    first)."""
    gini: float
    """Gini coefficient of how often items are recommended (0: every item equally, 1: one item always)."""


def item_deciles(dataset: Dataset) -> np.ndarray:
    """(n_items + 1,) decile 0 … 9 of every item by training count, most popular first (index 0: -1)."""
    counts = dataset.item_counts(max_split=TRAIN)[1:]
    order = np.argsort(-counts, kind="stable")
    deciles = np.empty(len(counts), dtype=np.int64)
    deciles[order] = np.arange(len(counts)) * 10 // max(1, len(counts))
    return np.concatenate([[-1], deciles])


def gini(counts: np.ndarray) -> float:
    x = np.sort(np.asarray(counts, dtype=np.float64))
    if x.size == 0 or x.sum() == 0:
        return 0.0
    n = x.size
    return float((2 * np.arange(1, n + 1) - n - 1).dot(x) / (n * x.sum()))


def popularity_bias(run: ModelRun, dataset: Dataset) -> PopularityBias:
    ks = [k for k in (1, 5, 10, 20, 50) if f"coverage@{k}" in run.metrics]
    rec = run.per_user.recommended
    deciles = item_deciles(dataset)
    slots = float(rec[1:].sum())
    share = [float(rec[deciles == d].sum()) / slots if slots else 0.0 for d in range(10)]
    return PopularityBias(
        k=run.per_user.recommended_k,
        coverage={k: float(run.metrics[f"coverage@{k}"]) for k in ks},
        popularity={k: float(run.metrics[f"popularity@{k}"]) for k in ks},
        decile_share=share,
        gini=gini(rec[1:]),
    )


def interaction_decile_share(dataset: Dataset) -> list[float]:
    """Share of the training interactions that each item-popularity decile holds (the data's own bias)."""
    counts = dataset.item_counts(max_split=TRAIN)
    deciles = item_deciles(dataset)
    total = float(counts[1:].sum())
    return [float(counts[deciles == d].sum()) / total if total else 0.0 for d in range(10)]


# ---- training ------------------------------------------------------------------------------------------------------
def training_curves(run: ModelRun) -> dict[str, list[float]]:
    """``{"epoch": [1 …], "valid/ndcg@10": […], …}`` from the artifact's ``valid_history`` (epochs 1-based)."""
    history = run.artifact_metrics.get("valid_history") or []
    rows = [r for r in history if isinstance(r, dict) and "epoch" in r]
    if not rows:
        return {}
    out: dict[str, list[float]] = {"epoch": [float(r["epoch"]) + 1 for r in rows]}
    for key in ("valid/hr@10", "valid/ndcg@10", "valid/hr@20", "valid/ndcg@20"):
        if all(key in r for r in rows):
            out[key] = [float(r[key]) for r in rows]
    return out


def training_summary(run: ModelRun) -> dict[str, Any]:
    m = run.artifact_metrics
    return {
        key: m.get(key) for key in ("best_epoch", "epochs_run", "valid_ndcg@10", "seconds_per_epoch", "train_seconds")
    }


# ---- the data set --------------------------------------------------------------------------------------------------
def dataset_statistics(dataset: Dataset) -> dict[str, Any]:
    """The manifest's statistics plus the long tail: how concentrated the interactions are on few items."""
    stats = dataset.statistics()
    counts = np.sort(dataset.item_counts(max_split=TRAIN)[1:])[::-1]
    total = float(counts.sum())
    top = max(1, round(0.2 * len(counts)))
    stats["share_of_interactions_top20pct_items"] = float(counts[:top].sum()) / total if total else 0.0
    stats["items_never_in_train"] = int((counts == 0).sum())
    stats["item_gini"] = gini(counts)
    stats["dataset_hash"] = dataset.content_hash
    return stats


def sequence_lengths(dataset: Dataset) -> np.ndarray:
    """Interactions per user (every split)."""
    return np.bincount(dataset.user, minlength=dataset.n_users + 1)[1:]


def item_frequencies(dataset: Dataset) -> np.ndarray:
    """Training interactions per item, most frequent first."""
    return np.sort(dataset.item_counts(max_split=TRAIN)[1:])[::-1]
