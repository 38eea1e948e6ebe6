"""Popularity: every user gets the most interacted-with items. The yardstick and the fallback that never fails."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np
import torch

from recengine.data.dataset import TRAIN, Dataset
from recengine.engines.artifact import read_artifact, require
from recengine.engines.base import Engine
from recengine.settings import PopularitySettings


class Popularity(Engine):
    name = "popularity"

    def __init__(self, counts: torch.Tensor, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.counts = counts.float()  # (n_items + 1,); ties stay ties, so the evaluator treats them honestly
        self._scores = self.counts.clone()
        self._scores[0] = -torch.inf

    @classmethod
    def fit(cls, dataset: Dataset, config: PopularitySettings | None = None, **kwargs: Any) -> Self:
        config = config or PopularitySettings()
        keep = dataset.split == TRAIN
        if config.window_days is not None and keep.any():
            newest = int(dataset.timestamp[keep].max())
            keep &= dataset.timestamp >= newest - config.window_days * 86_400
        counts = np.bincount(dataset.item[keep], minlength=dataset.n_items + 1).astype(np.float32)
        counts[0] = 0.0
        return cls(
            counts=torch.from_numpy(counts),
            items=dataset.items,
            config={"hyper_parameters": config.model_dump(), "dataset_hash": dataset.content_hash},
        )

    def score(self, histories: Sequence[np.ndarray]) -> torch.Tensor:
        return self._scores.unsqueeze(0).expand(len(histories), -1)

    def save(self, path: Path) -> Path:
        return self._write(path, {"counts": self.counts})

    @classmethod
    def load(cls, path: Path) -> Self:
        art = read_artifact(path, expect_engine=cls.name)
        counts = require(art, "counts", (art.items.n_items + 1,))
        return cls(counts=counts, items=art.items, config=art.config, metrics=art.metrics)
