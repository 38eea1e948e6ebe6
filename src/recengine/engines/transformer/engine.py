"""The transformer engine's serving side: a trained SASRec model, scored without Lightning.

    engine = training.run.fit("transformer", dataset, settings.engines.transformer, settings.training, artifacts)
    engine.save(model_dir)                       # weights.safetensors + config.json (hyper-parameters) + vocab.json
    engine = TransformerEngine.load(model_dir)   # torch + safetensors only
    scores = engine.score([history, ...])        # (B, n_items + 1), next-item scores from each history

Training lives in ``task.py`` (the Lightning task) and ``training/run.py``; a serving process never imports them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import torch

from recengine.engines.artifact import read_artifact, require, write_artifact
from recengine.engines.base import Engine, known_items, stored_threads, use_threads
from recengine.engines.sequences import pad_histories
from recengine.engines.transformer.model import SASRec, SASRecConfig
from recengine.errors import ArtifactError, NoHistory


class TransformerEngine(Engine):
    name = "transformer"
    needs_history: ClassVar[bool] = True
    training_task: ClassVar[str | None] = "recengine.engines.transformer.task"

    def __init__(self, model: SASRec, inference_threads: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model = model.eval()
        self.inference_threads = inference_threads

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
        return write_artifact(path, self.name, tensors, self.config, self.items, self.metrics)

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
