"""The serving side of the two-tower model: a precomputed item matrix, exact or ANN retrieval, new items at run time.

    engine = NeuralEngine.fit(dataset, settings.engines.neural, training=settings.training, tracking_dir=Path("a"))
    engine.score(histories)                  # (B, n_items + 1) exact cosine / temperature, for the evaluator
    engine.recommend(histories, k=10)        # exact below engines.neural.ann_threshold items, faiss above it
    engine.similar_items(np.array([3]), 10)  # nearest items in the same space
    engine.add_items(metadata_frame)         # new items embedded from metadata alone, searchable at once
    engine.save(path); NeuralEngine.load(path)

The artifact holds the model weights, the feature vocabularies (config.json) and the catalogue with its metadata
(vocab.json), which is all ``add_items`` needs after a reload; loading needs no Lightning.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np
import polars as pl
import torch

from recengine.data.dataset import TRAIN, Dataset, IdMap, ItemCatalog
from recengine.engines.artifact import read_artifact, require, write_artifact
from recengine.engines.base import Engine, known_items, stored_threads, use_threads
from recengine.engines.index import ExactIndex, VectorIndex, build_index, recall_at_k
from recengine.engines.neural.features import FeatureVocab, parse_new_items
from recengine.engines.neural.model import ItemInputs, TwoTower, TwoTowerConfig, pad_right
from recengine.errors import ArtifactError, DataError, NoHistory
from recengine.settings import NeuralSettings, TrainingSettings

Progress = Callable[[str, int | None, int | None], None]


class NeuralEngine(Engine):
    name = "neural"
    needs_history = True

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

    # ---- training ----------------------------------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        dataset: Dataset,
        config: NeuralSettings | None = None,
        training: TrainingSettings | None = None,
        tracking_dir: Path = Path("artifacts"),
        progress: Progress | None = None,
        callbacks: Sequence[Any] = (),
        **kwargs: Any,
    ) -> Self:
        """Train on the train split, pick the epoch by validation NDCG@10, track the run in MLflow.

        ``callbacks``: extra Lightning callbacks, run after each epoch's validation."""
        from recengine.engines.neural.module import TwoTowerModule
        from recengine.training.datamodule import SequenceDataModule
        from recengine.training.tracking import Tracker
        from recengine.training.trainer import RankingValidation, build_trainer

        config = config or NeuralSettings()
        training = training or TrainingSettings()
        training = training.with_overrides(patience=config.patience)
        counts = dataset.item_counts(max_split=TRAIN)
        if counts.sum() == 0:
            raise DataError("neural: the training split is empty")
        vocab = FeatureVocab.fit(dataset.items, config.title_buckets)
        has_id = torch.from_numpy(counts > 0)
        model_config = TwoTowerConfig(
            n_id_items=dataset.n_items,
            n_categories=vocab.n_categories,
            title_buckets=vocab.title_buckets,
            n_numeric=len(vocab.numeric),
            d_model=config.d_model,
            max_len=config.max_len,
            temperature=config.temperature,
            dropout=config.dropout,
        )
        torch.manual_seed(training.seed)
        module = TwoTowerModule(model_config, vocab.encode_catalog(dataset.items, has_id), counts, config, training)
        data = SequenceDataModule(dataset, config.max_len, training.batch_size, seed=training.seed)
        tracker = Tracker.start(
            training, tracking_dir, run_name="neural", tags={"engine": "neural", "dataset_hash": dataset.content_hash}
        )
        tracker.log_params(
            {"engine": config.model_dump(), "training": training.model_dump(), "model": model_config.to_dict()}
        )
        validation = RankingValidation(dataset, max_users=training.valid_users)
        trainer = build_trainer(
            training,
            tracking_dir,
            callbacks=[validation, *callbacks],
            progress=progress,
            tracker=tracker,
            run_name="neural",
        )
        started = time.perf_counter()
        try:
            trainer.fit(module, datamodule=data)
        except BaseException:
            tracker.finish("FAILED")
            raise
        seconds = time.perf_counter() - started
        epochs = max(1, trainer.current_epoch)
        metrics = {
            "best_epoch": validation.best_epoch,
            "valid_ndcg@10": validation.best_score,
            "epochs": epochs,
            "seconds_per_epoch": round(seconds / epochs, 2),
            "valid_history": validation.history,
            "mlflow_run_id": tracker.run_id,
        }
        tracker.log_metrics({"best/valid_ndcg@10": validation.best_score, "best/epoch": validation.best_epoch})
        tracker.finish()
        engine = cls(
            model=module.model.cpu(),
            vocab=vocab,
            has_id=has_id,
            ann_threshold=config.ann_threshold,
            ann_kind=config.ann_kind,
            inference_threads=config.inference_threads,
            items=dataset.items,
            config={
                "hyper_parameters": config.model_dump(),
                "training": training.model_dump(mode="json"),
                "dataset_hash": dataset.content_hash,
            },
            metrics=metrics,
        )
        engine.tracker = tracker
        return engine

    tracker: Any = None

    def log_test_metrics(self, metrics: dict[str, Any]) -> None:
        """The CLI's hook: final test figures go to this training's MLflow run."""
        if self.tracker is not None:
            self.tracker.log_metrics({f"test/{k}": v for k, v in metrics.items()})

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
        seqs, lengths = pad_right(hist, self.model.cfg.max_len)
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
            "model": self.model.cfg.to_dict(),
            "features": self.vocab.to_dict(),
            "ann": {"threshold": self.ann_threshold, "kind": self.ann_kind},
        }
        return write_artifact(path, self.name, tensors, config, self.items, self.metrics)

    @classmethod
    def load(cls, path: Path) -> Self:
        art = read_artifact(path, expect_engine=cls.name)
        try:
            model_config = TwoTowerConfig.from_dict(art.config["model"])
            vocab = FeatureVocab.from_dict(art.config["features"])
            ann = art.config.get("ann", {})
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
            inference_threads=stored_threads(art.config.get("hyper_parameters")),
            items=art.items,
            config=art.config,
            metrics=art.metrics,
        )
