"""The serving side of the two-tower model: a precomputed item matrix, exact or ANN retrieval, new items at run time.

    engine = training.run.fit("neural", dataset, settings.engines.neural, settings.training, artifacts_dir)
    engine.score(histories)                  # (B, n_items + 1) exact cosine / temperature, for the evaluator
    engine.recommend(histories, k=10)        # exact below engines.neural.ann_threshold items, faiss above it
    engine.similar_items(np.array([3]), 10)  # nearest items in the same space
    engine.add_items(metadata_frame)         # new items embedded from metadata alone, searchable at once
    engine.save(path); NeuralEngine.load(path)

The artifact holds the model weights, the feature vocabularies (config.json) and the catalogue with its metadata
(vocab.json), which is all ``add_items`` needs after a reload; loading needs no Lightning. Training lives in
``task.py`` (the Lightning task) and ``training/run.py``.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import polars as pl
import torch

from recengine.data.dataset import IdMap, ItemCatalog
from recengine.engines.artifact import read_artifact, require, write_artifact
from recengine.engines.base import Engine, known_items, stored_threads, use_threads
from recengine.engines.index import ExactIndex, VectorIndex, build_index, recall_at_k
from recengine.engines.neural.features import FeatureVocab, parse_new_items
from recengine.engines.neural.model import ItemInputs, TwoTower, TwoTowerConfig
from recengine.engines.sequences import pad_histories
from recengine.errors import ArtifactError, NoHistory


class NeuralEngine(Engine):
    name = "neural"
    needs_history = True
    training_task: ClassVar[str | None] = "recengine.engines.neural.task"

    def __init__(
        self,
        model: TwoTower,
        vocab: FeatureVocab,
        has_id: torch.Tensor,
        ann_threshold: int = 50_000,
        ann_kind: str = "ivf",
        inference_threads: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.inference_threads = inference_threads
        self.model = model.eval()
        self.vocab = vocab
        self.has_id = has_id.bool()  # (n_items + 1,): items whose id embedding was trained
        self.ann_threshold = int(ann_threshold)
        self.ann_kind = ann_kind
        self._lock = threading.Lock()  # add_items swaps the matrix and index under it; reads take references
        self.inputs = vocab.encode_catalog(self.items, self.has_id)
        self.item_matrix = self._embed(self.inputs)  # (n_items + 1, d), L2-normalised, row 0 zero
        self.item_matrix[0] = 0.0
        self.index: VectorIndex = build_index(self.item_matrix.numpy(), self.ann_threshold, self.ann_kind)  # type: ignore[arg-type]
        if self.index.kind != "exact":
            self.metrics = {**self.metrics, "ann": self.ann_recall()}

    def ann_recall(self, n_queries: int = 200, k: int = 10, seed: int = 0) -> dict[str, Any]:
        """Recall@k of the serving index vs exact search, with item vectors of random items as queries."""
        matrix = self.item_matrix.numpy()
        rng = np.random.default_rng(seed)
        queries = matrix[rng.integers(1, matrix.shape[0], size=min(n_queries, matrix.shape[0] - 1))]
        recall = recall_at_k(self.index, ExactIndex(matrix), queries, k)
        return {"kind": self.index.kind, "n_items": matrix.shape[0] - 1, f"recall@{k}": round(recall, 4)}

    # ---- inference ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def _embed(self, inputs: ItemInputs) -> torch.Tensor:
        return self.model.item_vectors(inputs).float().contiguous()

    def _check(self, histories: Sequence[np.ndarray], n_items: int) -> list[np.ndarray]:
        """The known items of each history (unknown indices skipped); NoHistory when a history has none."""
        out = []
        for row, h in enumerate(histories):
            arr = known_items(h, n_items)
            if arr.size == 0:
                raise NoHistory(f"history {row} has no known items; the neural engine needs at least one")
            out.append(arr)
        return out

    @torch.no_grad()
    def user_vectors(self, histories: Sequence[np.ndarray], matrix: torch.Tensor | None = None) -> torch.Tensor:
        """L2-normalised user vectors (B, d) from the histories alone."""
        use_threads(self.inference_threads)
        matrix = self.item_matrix if matrix is None else matrix
        hist = self._check(histories, matrix.shape[0] - 1)
        seqs, lengths = pad_histories(hist, self.model.cfg.max_len)
        return self.model.last_user_vectors(matrix[seqs], lengths)

    @torch.no_grad()
    def score(self, histories: Sequence[np.ndarray]) -> torch.Tensor:
        matrix = self.item_matrix
        scores = self.user_vectors(histories, matrix) @ matrix.T / self.model.temperature
        scores[:, 0] = -torch.inf
        return scores

    @torch.no_grad()
    def top_items(
        self,
        histories: Sequence[np.ndarray],
        k: int,
        excluded: Sequence[np.ndarray],
        allowed: Sequence[np.ndarray | None] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        index = self.index
        if index.kind == "exact":
            return super().top_items(histories, k, excluded, allowed)
        users = self.user_vectors(histories).numpy()
        # Filters go into the search (selector or exact scoring of the allowed items), so an IVF probe that holds
        # few allowed items cannot leave a filtered answer short.
        ids, cos = index.search(users, k, exclude=excluded, allow=allowed)
        return ids, cos / float(self.model.temperature)

    def similar_items(self, item_indices: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Nearest items by cosine of the item vectors, the item itself left out.

        An unknown item has no vector: like an empty history, it raises NoHistory."""
        items = np.asarray(item_indices, dtype=np.int64).reshape(-1)
        matrix = self.item_matrix
        use_threads(self.inference_threads)
        unknown = np.flatnonzero((items < 1) | (items >= matrix.shape[0]))
        if unknown.size:
            row = int(unknown[0])
            raise NoHistory(f"item {row} (index {items[row]}) is not in the catalogue 1..{matrix.shape[0] - 1}")
        return self.index.search(matrix[items].numpy(), k, exclude=[np.asarray([i]) for i in items])

    # ---- new items ---------------------------------------------------------------------------------------------
    def add_items(self, metadata: pl.DataFrame) -> list[int]:
        """Embed new items from their metadata alone and make them retrievable at once; returns their indices.

        ``metadata`` columns: ``item`` (new external id), ``title``, ``categories`` (list of strings) and the
        numeric columns the model was trained on. Raises DataError naming the first bad row; nothing is added then.
        """
        with self._lock:
            new = parse_new_items(metadata, self.items.ids, self.vocab)
            if not new.ids:
                return []
            cat, tit, num = self.vocab.encode(new.titles, new.categories, new.numeric)
            n_new = len(new.ids)
            inputs = ItemInputs(torch.zeros(n_new, dtype=torch.long), cat, tit, num)  # no trained id embedding
            vectors = self._embed(inputs)
            first = self.n_items + 1
            old = self.items
            n_old = old.n_items + 1
            numeric = {
                name: np.concatenate([col, new.numeric.get(name, np.full(n_new, np.nan, dtype=np.float32))])
                for name, col in old.numeric.items()
            }
            self.items = ItemCatalog(
                ids=IdMap([*old.ids.ids, *new.ids]),
                titles=[*(old.titles or [None] * n_old), *new.titles],
                categories=[*(old.categories or [[] for _ in range(n_old)]), *new.categories],
                numeric=numeric,
            )
            self.has_id = torch.cat([self.has_id, torch.zeros(n_new, dtype=torch.bool)])
            self.inputs = ItemInputs(
                torch.cat([self.inputs.ids, inputs.ids]),
                torch.cat([self.inputs.categories, cat]),
                torch.cat([self.inputs.title, tit]),
                torch.cat([self.inputs.numeric, num]),
            )
            self.index.add(vectors.numpy())
            # The index keeps the grown matrix for exact scoring of filtered rows; sharing it saves a second copy.
            self.item_matrix = self.index.vectors
            return list(range(first, first + n_new))

    # ---- persistence -------------------------------------------------------------------------------------------
    def save(self, path: Path) -> Path:
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        tensors["has_id"] = self.has_id.to(torch.uint8)
        config = {
            **self.config,
            "hyper_parameters": self.model.cfg.to_dict(),
            "features": self.vocab.to_dict(),
            "ann": {"threshold": self.ann_threshold, "kind": self.ann_kind},
        }
        return write_artifact(path, self.name, tensors, config, self.items, self.metrics)

    @classmethod
    def load(cls, path: Path) -> Self:
        art = read_artifact(path, expect_engine=cls.name)
        config = upgrade_config(art.config)
        try:
            model_config = TwoTowerConfig.from_dict(config["hyper_parameters"])
            vocab = FeatureVocab.from_dict(config["features"])
            ann = config.get("ann", {})
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"{path}/config.json: malformed neural model section ({exc})") from None
        model = TwoTower(model_config)
        expected = {f"model.{k}": tuple(v.shape) for k, v in model.state_dict().items()}
        # Checked by the names stored in the file, so the error names the tensor as weights.safetensors spells it.
        unexpected = sorted(k for k in art.tensors if k.startswith("model.") and k not in expected)
        try:
            if unexpected:
                raise ArtifactError(f"{path}: weights.safetensors has unexpected tensors {unexpected}")
            state = {k.removeprefix("model."): require(art, k, shape) for k, shape in expected.items()}
        except ArtifactError as exc:
            raise ArtifactError(f"{exc}: the weights do not fit the model in config.json") from None
        model.load_state_dict(state)
        has_id = require(art, "has_id", (art.items.n_items + 1,)).bool()
        return cls(
            model=model,
            vocab=vocab,
            has_id=has_id,
            ann_threshold=int(ann.get("threshold", 50_000)),
            ann_kind=str(ann.get("kind", "ivf")),
            inference_threads=stored_threads(config.get("settings")),
            items=art.items,
            config=config,
            metrics=art.metrics,
        )


def upgrade_config(config: dict[str, Any]) -> dict[str, Any]:
    """An artifact's config.json in today's layout (``hyper_parameters`` = the model config, ``settings`` = the
    engine settings, as the transformer's). Artifacts written before kept the model config under ``model`` and the
    settings under ``hyper_parameters``."""
    if "settings" in config or "model" not in config:
        return config
    old = dict(config)
    model, settings = old.pop("model"), old.pop("hyper_parameters", None)
    return {**old, "hyper_parameters": model, "settings": settings}
