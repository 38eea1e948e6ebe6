"""Fitted engines for the engine tests: one factory, one tiny configuration per engine, each fitted once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from recengine.data.dataset import Dataset
from recengine.engines import ENGINE_CLASSES
from recengine.engines.artifact import set_current, version_dir
from recengine.engines.base import Engine
from recengine.settings import (
    EaseSettings,
    NeuralSettings,
    PopularitySettings,
    RankerSettings,
    TrainingSettings,
    TransformerSettings,
)

#: One epoch of a small model: enough for a real artifact and real scores, in well under a second per engine.
TINY_TRAINING = TrainingSettings(
    epochs=1, batch_size=64, lr=3e-3, valid_users=None, accelerator="cpu", devices=1, num_threads=1
)
TINY_SECTIONS: dict[str, Any] = {
    "popularity": PopularitySettings(),
    "ease": EaseSettings(lambdas=[50.0]),
    "transformer": TransformerSettings(
        max_len=20, d_model=16, n_layers=1, n_heads=2, dropout=0.1, lr=None, warmup_steps=None, patience=None
    ),
    "neural": NeuralSettings(d_model=16, max_len=20),
    "ranker": RankerSettings(
        candidates=30,
        folds=2,
        num_leaves=[4, 8],
        learning_rates=[0.1],
        max_rounds=30,
        early_stopping=5,
        min_data_in_leaf=5,
        training_threads=1,
    ),
}
assert set(TINY_SECTIONS) == set(ENGINE_CLASSES), "every engine needs a tiny configuration"


def fitted_engine(
    name: str, dataset: Dataset, tmp: Path, section: Any = None, training: TrainingSettings | None = None
) -> Engine:
    """``name`` fitted on ``dataset`` (tiny settings unless given), its training runs tracked under ``tmp``.

    The one place the engine tests call the training API, so a change of that API changes this function only.
    """
    from recengine.training.run import fit

    return fit(name, dataset, TINY_SECTIONS[name] if section is None else section, training or TINY_TRAINING, tmp)


@pytest.fixture(scope="session")
def fitted(small_dataset: Dataset, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Engine]:
    """``fitted(name)``: that engine with the tiny settings on the small data set, fitted once per session.

    Shared by every test that asks for it: read it, save it, never change it.
    """
    engines: dict[str, Engine] = {}

    def get(name: str) -> Engine:
        if name not in engines:
            tmp = tmp_path_factory.mktemp(f"fit-{name}")
            if name == "ranker":  # built on the others' models: their CURRENT artifacts under its artifacts folder
                for base in TINY_SECTIONS["ranker"].base_engines:
                    model = get(base)
                    set_current(model.save(version_dir(tmp, base, model.version)))
            engines[name] = fitted_engine(name, small_dataset, tmp)
        return engines[name]

    return get
