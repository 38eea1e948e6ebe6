"""The transformer engine: trains a SASRec model with Lightning (``fit``) and serves it without Lightning.

    engine = TransformerEngine.fit(dataset, settings.engines.transformer, training=settings.training,
                                   tracking_dir=artifacts_dir, progress=report)
    engine.save(model_dir)                       # weights.safetensors + config.json (hyper-parameters) + vocab.json
    engine = TransformerEngine.load(model_dir)   # torch + safetensors only
    scores = engine.score([history, ...])        # (B, n_items + 1), next-item scores from each history

Only ``fit`` imports Lightning and MLflow, so a serving process never needs them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import torch

from recengine.data.dataset import TRAIN, Dataset
from recengine.engines.artifact import read_artifact, require, write_artifact
from recengine.engines.base import Engine, known_items, stored_threads, use_threads
from recengine.engines.transformer.model import SASRec, SASRecConfig, pad_histories
from recengine.errors import ArtifactError, DataError, NoHistory
from recengine.settings import TrainingSettings, TransformerSettings

Progress = Callable[[str, int | None, int | None], None]


def resolve_max_len(config: TransformerSettings, dataset: Dataset) -> int:
    """``max_len = "auto"``: the 90th percentile of training sequence lengths, rounded up to a multiple of 10,
    kept within [20, 200].

    Longer windows cost attention time quadratically but only help the few users who have that much history;
    the floor keeps short-history data sets from losing what little context they have, and the cap (SASRec's
    setting for long-sequence data) bounds memory. Longer histories are still fully used for training: they are
    cut into consecutive windows.
    """
    if config.max_len != "auto":
        return int(config.max_len)
    lengths = np.bincount(dataset.user[dataset.split == TRAIN], minlength=dataset.n_users + 1)[1:]
    p90 = float(np.percentile(lengths, 90)) if lengths.size else 20.0
    return int(min(200, max(20, math.ceil(p90 / 10) * 10)))


class TransformerEngine(Engine):
    name = "transformer"
    needs_history: ClassVar[bool] = True

    def __init__(self, model: SASRec, inference_threads: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model = model.eval()
        self.inference_threads = inference_threads
        self._tracker: Any = None  # the MLflow run of the training that produced this engine, if any
        self._saved_to: Path | None = None

    # ---- training ----------------------------------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        dataset: Dataset,
        config: TransformerSettings | None = None,
        training: TrainingSettings | None = None,
        tracking_dir: Path | None = None,
        progress: Progress | None = None,
        callbacks: Sequence[Any] = (),
        **kwargs: Any,
    ) -> Self:
        """Train with Lightning; ``callbacks`` are extra Lightning callbacks, run after each epoch's validation."""
        from recengine.engines.transformer.module import SASRecModule
        from recengine.training.datamodule import SequenceDataModule
        from recengine.training.tracking import Tracker
        from recengine.training.trainer import RankingValidation, build_trainer

        config = config or TransformerSettings()
        training = training or TrainingSettings()
        tracking_dir = Path(tracking_dir or "artifacts")
        if dataset.n_items == 0:
            raise DataError("transformer: the data set has no items")
        max_len = resolve_max_len(config, dataset)
        training = training.with_overrides(
            lr=config.lr,
            warmup_steps=config.warmup_steps,
            patience=config.patience,
            batch_size=config.batch_size,
            batch_tokens=config.batch_tokens,
            batching=config.batching,
            average_epochs=config.average_epochs,
        )
        model_config = SASRecConfig(
            n_items=dataset.n_items,
            max_len=max_len,
            d_model=config.d_model,
            n_layers=config.n_layers,
            n_heads=config.n_heads,
            dropout=config.dropout,
            attn_dropout=config.attn_dropout,
            block=config.block,
            positions=config.positions,
        )
        torch.manual_seed(training.seed)
        data = SequenceDataModule(
            dataset,
            max_len=max_len,
            batch_size=training.batch_size,
            seed=training.seed,
            batch_tokens=training.batch_tokens,
            by_length=training.batching == "by_length",
        )
        if len(data.examples) == 0:
            raise DataError("transformer: no user has two or more training interactions to learn from")
        steps_per_epoch = len(data.train_dataloader())
        module = SASRecModule(
            model_config,
            config,
            training,
            total_steps=steps_per_epoch * training.epochs,
            item_counts=dataset.item_counts(max_split=TRAIN),
        )
        tracker = Tracker.start(
            training,
            tracking_dir,
            run_name=f"transformer-{dataset.content_hash}",
            tags={"engine": cls.name, "dataset_hash": dataset.content_hash},
        )
        try:
            tracker.log_params(
                {
                    "engine": config.model_dump(),
                    "model": model_config.to_dict(),
                    "training": training.model_dump(),
                    "dataset": {
                        "hash": dataset.content_hash,
                        "n_users": dataset.n_users,
                        "n_items": dataset.n_items,
                        "n_interactions": dataset.n_interactions,
                        "train_sequences": len(data.examples),
                        "train_targets": data.examples.n_targets,
                    },
                }
            )
            validation = RankingValidation(dataset, max_users=training.valid_users)
            trainer = build_trainer(
                training,
                tracking_dir,
                callbacks=[validation, *callbacks],
                progress=progress,
                tracker=tracker,
                run_name=f"transformer-{dataset.content_hash}",
            )
            if progress is not None:
                progress(f"training on {data.examples.n_targets} targets, max_len {max_len}", 0, training.epochs)
            started = time.perf_counter()
            trainer.fit(module, datamodule=data)
            train_seconds = time.perf_counter() - started
        except BaseException:
            tracker.finish("FAILED")
            raise
        epochs_run = int(trainer.current_epoch)
        summary = {
            "best_epoch": validation.best_epoch + 1,
            "best_valid_ndcg@10": validation.best_score,
            "epochs_run": epochs_run,
            "train_seconds": round(train_seconds, 2),
            "seconds_per_epoch": round(train_seconds / max(1, epochs_run), 2),
            "valid_history": validation.history,
        }
        tracker.log_metrics({k: v for k, v in summary.items() if not isinstance(v, list)}, step=epochs_run)
        tracker.finish()
        model = module.model.cpu().eval()
        engine = cls(
            model,
            inference_threads=config.inference_threads,
            items=dataset.items,
            config={
                "hyper_parameters": model_config.to_dict(),
                "settings": config.model_dump(),
                "training": training.model_dump(mode="json"),
                "dataset_hash": dataset.content_hash,
                "mlflow_run_id": tracker.run_id,
            },
            # Flat figures for tables; the per-epoch validation history stays nested.
            metrics={**{k: v for k, v in summary.items() if k != "valid_history"}, "training": summary},
        )
        engine._tracker = tracker
        return engine

    def log_test_metrics(self, metrics: dict[str, Any]) -> None:
        """Final test figures (and the exported artifact, once saved) go to the training's MLflow run."""
        if self._tracker is None:
            return
        self._tracker.log_metrics({f"test/{k}": v for k, v in metrics.items() if "@" in k})
        if self._saved_to is not None:
            self._tracker.log_artifact_dir(self._saved_to)

    # ---- inference ---------------------------------------------------------------------------------------------
    def score(self, histories: Sequence[np.ndarray]) -> torch.Tensor:
        """Next-item scores (B, n_items + 1) for each history; unknown indices are skipped (see engines/base.py)."""
        known = [known_items(h, self.n_items) for h in histories]
        for i, h in enumerate(known):
            if h.size == 0:
                raise NoHistory(f"history {i} has no known items; the transformer needs at least one")
        use_threads(self.inference_threads)
        seqs, lengths = pad_histories(known, self.model.config.max_len)
        with torch.inference_mode():
            return self.model.scores(seqs, lengths)

    # ---- persistence -------------------------------------------------------------------------------------------
    def save(self, path: Path) -> Path:
        tensors = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        out = write_artifact(path, self.name, tensors, self.config, self.items, self.metrics)
        self._saved_to = Path(out)
        return out

    @classmethod
    def load(cls, path: Path) -> Self:
        art = read_artifact(path, expect_engine=cls.name)
        hp = art.config.get("hyper_parameters")
        if not isinstance(hp, dict):
            raise ArtifactError(f"{path}/config.json: no 'hyper_parameters' object to rebuild the model from")
        try:
            model_config = SASRecConfig.from_dict(hp)
            model = SASRec(model_config)
        except (TypeError, ValueError) as exc:
            raise ArtifactError(f"{path}/config.json: invalid hyper_parameters ({exc})") from None
        if model_config.n_items != art.items.n_items:
            raise ArtifactError(
                f"{path}: hyper_parameters.n_items is {model_config.n_items}, vocab.json has {art.items.n_items}"
            )
        expected = model.state_dict()
        unexpected = sorted(set(art.tensors) - set(expected))
        if unexpected:
            raise ArtifactError(f"{path}: weights.safetensors has unexpected tensors {unexpected}")
        state = {name: require(art, name, tuple(t.shape)) for name, t in expected.items()}
        model.load_state_dict(state, strict=True)
        return cls(
            model,
            inference_threads=stored_threads(art.config.get("settings")),
            items=art.items,
            config=art.config,
            metrics=art.metrics,
        )
