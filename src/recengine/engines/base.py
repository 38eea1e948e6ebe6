"""The Engine contract: anything that can answer a recommendation.

Every engine works in index space (item indices from the data set's id map, 1-based, 0 = padding); the serving
layer translates external ids. A history is an int64 array of item indices in time order, oldest first.

    engine = training.run.fit("popularity", dataset, section, training, artifacts_dir)   # train (any engine)
    engine.save(model_dir)                                          # artifact: safetensors + JSON
    engine = load_engine(model_dir)                                 # any engine, from the directory alone
    scores = engine.score(histories)                                # (B, n_items + 1) — used by the evaluator
    ids, scores = engine.recommend(histories, k=10, exclude=...)    # (B, k) each, best first, history left out
    ids, scores = engine.recommend(histories, k=10, allow=[rows, None])  # only those items (None: any item)
    ids, scores = engine.similar_items(np.array([item]), k=10)     # (B, k) each, the item itself left out

Unknown items are skipped, never an error: an index that names no item (0, negative, or above ``n_items``) is
dropped wherever indices are accepted (histories, ``exclude``, ``allow``, ``similar_items``), so a stale or foreign
id from a client cannot fail a request. A history left without a known item is an empty history: an engine whose
``needs_history`` is True raises :class:`~recengine.errors.NoHistory` for it (and for ``similar_items`` of an
unknown item), the others answer it as they answer an empty one. ``tests/engines/contract.py`` checks this, and
the rest of the contract, on every engine.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import torch

from recengine.data.dataset import Dataset, IdMap, ItemCatalog
from recengine.engines.artifact import write_artifact
from recengine.evaluation import mask_scores


class Engine(ABC):
    """Base class of every engine. Subclasses set ``name`` and implement score / save / load, and either ``fit``
    (closed form) or a training task (``training_task``)."""

    name: ClassVar[str]
    #: True when the engine needs a non-empty history (it raises NoHistory otherwise).
    needs_history: ClassVar[bool] = False

    def __init__(
        self, items: ItemCatalog, config: dict[str, Any] | None = None, metrics: dict[str, Any] | None = None
    ) -> None:
        self.items = items
        #: config.json contents: hyper-parameters, data set hash, version.
        self.config: dict[str, Any] = config or {}
        #: metrics.json contents: training, validation and test figures.
        self.metrics: dict[str, Any] = metrics or {}

    @property
    def item_ids(self) -> IdMap:
        return self.items.ids

    @property
    def n_items(self) -> int:
        return len(self.items.ids)

    @property
    def version(self) -> str:
        return str(self.config.get("version", "unversioned"))

    # ---- training ----------------------------------------------------------------------------------------------
    #: Module of the engine's Lightning training task (``build_task`` / ``from_trained``, see ``training/task.py``)
    #: for an engine trained by gradient descent; None for a closed-form engine, which implements :meth:`fit`.
    training_task: ClassVar[str | None] = None
    #: True for an engine that learns from the validation targets (the ranker): its own validation figures are
    #: in-sample, so ``training.run`` reports its held-out estimate (``cv_ndcg@10``) instead, and refuses to refit it.
    learns_from_validation: ClassVar[bool] = False

    @classmethod
    def fit(cls, dataset: Dataset, config: Any, **kwargs: Any) -> Self:
        """Closed-form engines: fit on ``dataset`` (its train split; validation for model selection).

        Called by ``training.run.fit``, which also validates, times and tracks the run."""
        raise NotImplementedError(f"{cls.__name__} trains through its training task ({cls.training_task})")

    # ---- inference ---------------------------------------------------------------------------------------------
    @abstractmethod
    def score(self, histories: Sequence[np.ndarray]) -> torch.Tensor:
        """Scores of every item for each history: float32 tensor (B, n_items + 1), column 0 (padding) -inf."""

    def recommend(
        self,
        histories: Sequence[np.ndarray],
        k: int,
        exclude: Sequence[np.ndarray] | None = None,
        exclude_history: bool = True,
        allow: Sequence[np.ndarray | None] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` item indices and scores per history, best first, (B, k) each.

        ``exclude`` adds per-row items that must not be returned. ``allow`` restricts a row to the items it lists
        (a category filter): ``allow[i]`` None, or a row past the end of ``allow``, allows every item; an empty
        array allows none. The answer is the best ``k`` of the allowed items left after exclusion, so a row is
        short only when fewer than ``k`` such items exist; short rows are padded with index 0 and score -inf.
        """
        return self.top_items(histories, k, exclusions(histories, exclude, exclude_history), allow)

    def top_items(
        self,
        histories: Sequence[np.ndarray],
        k: int,
        excluded: Sequence[np.ndarray],
        allowed: Sequence[np.ndarray | None] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``recommend`` once the exclusions are decided: the top-``k`` of each row among ``allowed[i]`` (when
        given) without ``excluded[i]``. By default from :meth:`score`; an engine with its own search (an ANN index)
        overrides this, not ``recommend``."""
        scores = self.score(histories).clone()
        mask_scores(scores, list(excluded))
        if allowed is not None:
            keep_only(scores, allowed)
        return topk(scores, k)

    def similar_items(self, item_indices: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Items most similar to each given item, the item itself left out. Default: one-item histories."""
        histories = [np.asarray([i], dtype=np.int64) for i in np.asarray(item_indices).reshape(-1)]
        return self.recommend(histories, k)

    # ---- persistence -------------------------------------------------------------------------------------------
    def _write(self, path: Path, tensors: dict[str, torch.Tensor]) -> Path:
        """Write the artifact and adopt the config as written (it gains a version and a creation time)."""
        path = write_artifact(path, self.name, tensors, self.config, self.items, self.metrics)
        self.config = json.loads((path / "config.json").read_text())
        return path

    @abstractmethod
    def save(self, path: Path) -> Path:
        """Write the artifact directory (see ``engines/artifact.py``) and return it."""

    @classmethod
    @abstractmethod
    def load(cls, path: Path) -> Self:
        """Rebuild the engine from an artifact directory alone."""


def use_threads(n: int | None) -> None:
    """Intra-op threads for this process's inference (torch, and faiss when it is loaded); None leaves them be."""
    if n is None:
        return
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    import sys

    faiss = sys.modules.get("faiss")
    if faiss is not None and faiss.omp_get_max_threads() != n:
        faiss.omp_set_num_threads(n)


def stored_threads(section: Any) -> int | None:
    """``inference_threads`` from an artifact's saved engine settings (config.json), if it holds a usable one."""
    value = section.get("inference_threads") if isinstance(section, dict) else None
    return int(value) if isinstance(value, int | float) and value >= 1 else None


def exclusions(
    histories: Sequence[np.ndarray], exclude: Sequence[np.ndarray] | None = None, exclude_history: bool = True
) -> list[np.ndarray]:
    """Per row, the item indices ``recommend`` must not return: the history itself (unless ``exclude_history`` is
    False) and the row's ``exclude`` entry (rows past the end of ``exclude`` have none)."""
    out: list[np.ndarray] = []
    for i, h in enumerate(histories):
        parts = [np.asarray(h, dtype=np.int64)] if exclude_history else []
        if exclude is not None and i < len(exclude):
            parts.append(np.asarray(exclude[i], dtype=np.int64))
        out.append(np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64))
    return out


def keep_only(scores: torch.Tensor, allowed: Sequence[np.ndarray | None]) -> torch.Tensor:
    """Set every column of row ``i`` outside ``allowed[i]`` to -inf, in place (None: the row is left as it is;
    indices that name no column are skipped); returns ``scores``."""
    n_cols = scores.shape[1]
    for i, rows in enumerate(allowed[: scores.shape[0]]):
        if rows is None:
            continue
        r = np.asarray(rows, dtype=np.int64).reshape(-1)
        keep = torch.from_numpy(r[(r > 0) & (r < n_cols)])
        kept = scores[i, keep].clone()
        scores[i] = -torch.inf
        scores[i, keep] = kept
    return scores


def topk(scores: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of each row as numpy arrays; -inf entries come back as index 0."""
    k = max(0, min(int(k), scores.shape[1] - 1))
    values, indices = torch.topk(scores, k, dim=1)
    indices = torch.where(torch.isinf(values) & (values < 0), torch.zeros_like(indices), indices)
    return indices.numpy(), values.numpy()


def known_items(history: np.ndarray, n_items: int) -> np.ndarray:
    """The indices of ``history`` that name an item (1..n_items), in their order; unknown ones are skipped."""
    h = np.asarray(history, dtype=np.int64).reshape(-1)
    return h[(h > 0) & (h <= n_items)]


def history_bags(histories: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Histories as ``embedding_bag`` input: flat unique item indices (padding 0 dropped) and row offsets."""
    rows = []
    for h in histories:
        u = np.unique(np.asarray(h, dtype=np.int64))
        rows.append(u[u > 0])
    offsets = np.zeros(len(rows), dtype=np.int64)
    if rows:
        offsets[1:] = np.cumsum([r.size for r in rows])[:-1]
    flat = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
    return torch.from_numpy(flat), torch.from_numpy(offsets)
