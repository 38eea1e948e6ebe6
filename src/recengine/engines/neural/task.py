"""The neural engine's training task (see ``training/task.py``): the two-tower module and its data from the settings,
and the serving engine from the trained module. ``training.run.fit("neural", …)`` drives it."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from recengine.data.dataset import TRAIN, Dataset
from recengine.engines.neural.engine import NeuralEngine
from recengine.engines.neural.features import FeatureVocab
from recengine.engines.neural.model import TwoTowerConfig
from recengine.engines.neural.module import TwoTowerModule
from recengine.errors import DataError
from recengine.settings import NeuralSettings, TrainingSettings
from recengine.training.datamodule import SequenceDataModule
from recengine.training.task import Task, artifact_config


def item_features(dataset: Dataset, section: NeuralSettings) -> tuple[np.ndarray, FeatureVocab, torch.Tensor]:
    """Training interactions per item, the metadata vocabularies, and which items get a trained id embedding."""
    counts = dataset.item_counts(max_split=TRAIN)
    vocab = FeatureVocab.fit(dataset.items, section.title_buckets)
    return counts, vocab, torch.from_numpy(counts > 0)


def build_task(dataset: Dataset, section: NeuralSettings, training: TrainingSettings) -> Task:
    training = training.with_overrides(patience=section.patience)
    counts, vocab, has_id = item_features(dataset, section)
    if counts.sum() == 0:
        raise DataError("neural: the training split is empty")
    model_config = TwoTowerConfig.from_settings(
        section,
        n_id_items=dataset.n_items,
        n_categories=vocab.n_categories,
        title_buckets=vocab.title_buckets,
        n_numeric=len(vocab.numeric),
    )
    torch.manual_seed(training.seed)
    module = TwoTowerModule(model_config, vocab.encode_catalog(dataset.items, has_id), counts, section, training)
    data = SequenceDataModule(dataset, section.max_len, training.batch_size, seed=training.seed)
    return Task(module=module, data=data, training=training, params={"model": model_config.to_dict()})


def from_trained(
    module: TwoTowerModule,
    dataset: Dataset,
    section: NeuralSettings,
    training: TrainingSettings,
    summary: dict[str, Any],
) -> NeuralEngine:
    _, vocab, has_id = item_features(dataset, section)
    model = module.model.cpu()
    return NeuralEngine(
        model=model,
        vocab=vocab,
        has_id=has_id,
        ann_threshold=section.ann_threshold,
        ann_kind=section.ann_kind,
        inference_threads=section.inference_threads,
        items=dataset.items,
        config=artifact_config(model.cfg.to_dict(), section, training, dataset),
        metrics=summary,
    )
