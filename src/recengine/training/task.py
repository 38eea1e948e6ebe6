"""What an engine trained by gradient descent gives the training run, and how the run turns it into an engine.

    task = build_task(dataset, section, training)                  # the engine's LightningModule + data
    ...                                                            # training/run.py trains, validates, selects
    engine = from_trained(task.module, dataset, section, task.training, summary)   # the serving engine

Each such engine implements :class:`EngineTask` in its own ``task.py`` (a training task and its conversion to the
serving engine, as torchrec's retrieval example separates them) and names that module in
``Engine.training_task``; ``training/run.py`` owns the rest of the run (tracking, validation, trainer, selection).
The engine's ``engine.py`` never imports its task: serving needs no Lightning.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel

from recengine.data.dataset import Dataset
from recengine.settings import TrainingSettings

if TYPE_CHECKING:
    import lightning as L

    from recengine.engines.base import Engine

Progress = Callable[[str, int | None, int | None], None]
"""``progress(message, done, total)``: a line to show, and the steps done out of a total when known."""


@dataclass
class Task:
    module: L.LightningModule
    """Implements ``score(histories) -> (B, n_items + 1)`` so the run validates it with the project's evaluator."""
    data: L.LightningDataModule
    training: TrainingSettings
    """The run's training settings with the engine's own overrides applied (what the trainer is built from)."""
    params: dict[str, Any] = field(default_factory=dict)
    """Tracked as run parameters beside the engine settings, the training settings and the data set's figures."""
    description: str | None = None
    """A progress line for the start of training (what is being trained on)."""


class EngineTask(Protocol):
    """The two functions of an engine's ``task.py``."""

    def build_task(self, dataset: Dataset, section: Any, training: TrainingSettings) -> Task:
        """Seed torch, then build the module and its data (the engine decides the order of random draws)."""
        ...

    def from_trained(
        self,
        module: L.LightningModule,
        dataset: Dataset,
        section: Any,
        training: TrainingSettings,
        summary: dict[str, Any],
    ) -> Engine:
        """The serving engine from the trained (best-epoch) module; ``summary`` becomes its metrics."""
        ...


def artifact_config(
    model_config: dict[str, Any], section: BaseModel, training: TrainingSettings, dataset: Dataset
) -> dict[str, Any]:
    """The config.json of every ML engine's artifact (``train`` adds ``version``, ``fit`` the ``mlflow_run_id``):
    the model's own config to rebuild it from, the engine settings (``inference_threads`` and the rest), the
    effective training settings and the data set it was trained on."""
    return {
        "hyper_parameters": model_config,
        "settings": section.model_dump(),
        "training": training.model_dump(mode="json"),
        "dataset_hash": dataset.content_hash,
    }
