"""The transformer's training task (see ``training/task.py``): the SASRec module and its data from the settings, and
the serving engine from the trained module. ``training.run.fit("transformer", …)`` drives it."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from recengine.data.dataset import TRAIN, Dataset
from recengine.engines.transformer.engine import TransformerEngine
from recengine.engines.transformer.model import SASRecConfig
from recengine.engines.transformer.module import SASRecModule
from recengine.errors import DataError
from recengine.settings import TrainingSettings, TransformerSettings
from recengine.training.datamodule import SequenceDataModule
from recengine.training.task import Task, artifact_config


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


# Settings of engines.transformer that replace the training section's for this engine (None keeps training's).
TRAINING_OVERRIDES = ("lr", "warmup_steps", "patience", "batch_size", "batch_tokens", "batching", "average_epochs")


def engine_training(section: TransformerSettings, training: TrainingSettings) -> TrainingSettings:
    """The training settings with this engine's own overrides applied."""
    return training.with_overrides(**{k: getattr(section, k) for k in TRAINING_OVERRIDES})


def build_task(dataset: Dataset, section: TransformerSettings, training: TrainingSettings) -> Task:
    if dataset.n_items == 0:
        raise DataError("transformer: the data set has no items")
    max_len = resolve_max_len(section, dataset)
    training = engine_training(section, training)
    model_config = SASRecConfig.from_settings(section, n_items=dataset.n_items, max_len=max_len)
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
    module = SASRecModule(
        model_config,
        section,
        training,
        item_counts=dataset.item_counts(max_split=TRAIN),
    )
    return Task(
        module=module,
        data=data,
        training=training,
        params={
            "model": model_config.to_dict(),
            "dataset": {"train_sequences": len(data.examples), "train_targets": data.examples.n_targets},
        },
        description=f"training on {data.examples.n_targets} targets, max_len {max_len}",
    )


def from_trained(
    module: SASRecModule,
    dataset: Dataset,
    section: TransformerSettings,
    training: TrainingSettings,
    summary: dict[str, Any],
) -> TransformerEngine:
    model = module.model.cpu().eval()
    return TransformerEngine(
        model,
        inference_threads=section.inference_threads,
        items=dataset.items,
        config=artifact_config(model.config.to_dict(), section, training, dataset),
        metrics=summary,
    )
