"""The training run: one MLflow run that always finishes, test figures in it, one metrics and artifact schema."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from pydantic import BaseModel

from recengine.data.dataset import Dataset
from recengine.engines import load_engine
from recengine.engines.artifact import current_dir
from recengine.errors import ConfigError, TrainingDiverged
from recengine.settings import (
    EaseSettings,
    NeuralSettings,
    PopularitySettings,
    TrainingSettings,
    TransformerSettings,
)
from recengine.training import run
from recengine.training.tracking import Tracker

TRAINING = TrainingSettings(epochs=2, batch_size=64, lr=3e-3, valid_users=None, accelerator="cpu", devices=1)
SECTIONS: dict[str, BaseModel] = {
    "popularity": PopularitySettings(),
    "ease": EaseSettings(lambdas=[5.0, 50.0]),
    "transformer": TransformerSettings(
        max_len=20, d_model=16, n_layers=1, n_heads=2, patience=None, inference_threads=3
    ),
    "neural": NeuralSettings(d_model=16, max_len=20, inference_threads=3),
}


class FakeTracker:
    """Records what the run logs, in order; ``fail`` names a method that raises."""

    def __init__(self, fail: str | None = None) -> None:
        self.run_id = "fake-run"
        self.calls: list[tuple[str, Any]] = []
        self.fail = fail

    def _record(self, name: str, value: Any) -> None:
        self.calls.append((name, value))
        if name == self.fail:
            raise RuntimeError(f"{name} refused")

    def log_params(self, params: Mapping[str, Any]) -> None:
        self._record("log_params", dict(params))

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        self._record("log_metrics", dict(metrics))

    def log_artifact_dir(self, path: Path, artifact_path: str = "model") -> None:
        self._record("log_artifact_dir", Path(path))

    def finish(self, status: str = "FINISHED") -> None:
        self._record("finish", status)

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


class FakeRuns:
    """Stands in for ``Tracker.start``: every run started is a fresh FakeTracker, kept in order."""

    def __init__(self) -> None:
        self.started: list[FakeTracker] = []
        self.fail: str | None = None

    def start(self, *args: Any, **kwargs: Any) -> FakeTracker:
        self.started.append(FakeTracker(fail=self.fail))
        return self.started[-1]


@pytest.fixture
def fake_runs(monkeypatch: pytest.MonkeyPatch) -> FakeRuns:
    runs = FakeRuns()
    monkeypatch.setattr(Tracker, "start", runs.start)
    return runs


@pytest.mark.parametrize("engine", ["popularity", "transformer"])
def test_a_failing_params_dump_finishes_the_run_failed(
    engine: str, small_dataset: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(self: Tracker, params: Mapping[str, Any]) -> None:
        raise RuntimeError("params refused")

    monkeypatch.setattr(Tracker, "log_params", refuse)
    with pytest.raises(RuntimeError, match="params refused"):
        run.train(engine, small_dataset, SECTIONS[engine], TRAINING, tmp_path / "artifacts")
    with pytest.raises(RuntimeError, match="params refused"):
        run.fit(engine, small_dataset, SECTIONS[engine], TRAINING, tmp_path / "artifacts")
    # A real MLflow store: both runs exist, and neither was left RUNNING (status 1); 4 is FAILED.
    metas = sorted((tmp_path / "mlruns").glob("*/*/meta.yaml"))
    assert len(metas) == 2
    assert all("status: 4" in meta.read_text() for meta in metas)
    assert current_dir(tmp_path / "artifacts", engine) is None


def test_the_run_finishes_failed_right_after_the_failure(
    small_dataset: Dataset, tmp_path: Path, fake_runs: FakeRuns
) -> None:
    fake_runs.fail = "log_params"
    with pytest.raises(RuntimeError, match="log_params refused"):
        run.train("ease", small_dataset, SECTIONS["ease"], TRAINING, tmp_path)
    assert len(fake_runs.started) == 1
    tracker = fake_runs.started[0]
    assert tracker.names() == ["log_params", "finish"] and tracker.calls[-1] == ("finish", "FAILED")


@pytest.mark.parametrize("engine", ["ease", "neural"])
def test_test_metrics_and_the_artifact_go_to_the_same_open_run(
    engine: str, small_dataset: Dataset, tmp_path: Path, fake_runs: FakeRuns
) -> None:
    result = run.train(engine, small_dataset, SECTIONS[engine], TRAINING, tmp_path)
    assert len(fake_runs.started) == 1  # fit logged into train's run instead of opening its own
    tracker = fake_runs.started[0]
    names = tracker.names()
    assert names[0] == "log_params" and names[-3:] == ["log_metrics", "log_artifact_dir", "finish"]
    assert tracker.calls[-1] == ("finish", "FINISHED") and names.count("finish") == 1
    test_logged = tracker.calls[-3][1]
    assert test_logged == {f"test/{k}": v for k, v in result.metrics.items() if "@" in k}
    assert tracker.calls[-2][1] == result.path
    assert result.mlflow_run_id == result.engine.config["mlflow_run_id"] == "fake-run"
    written = json.loads((result.path / "metrics.json").read_text())
    assert written["test"]["ndcg@10"] == result.metrics["ndcg@10"]
    # No explicit output: a new version, promoted, whose directory name is the version.
    assert current_dir(tmp_path, engine) == result.path
    assert json.loads((result.path / "config.json").read_text())["version"] == result.path.name


def test_an_explicit_output_is_not_promoted(small_dataset: Dataset, tmp_path: Path, fake_runs: FakeRuns) -> None:
    result = run.train("popularity", small_dataset, SECTIONS["popularity"], TRAINING, tmp_path, output=tmp_path / "m")
    assert result.path == tmp_path / "m" and (result.path / "weights.safetensors").is_file()
    assert current_dir(tmp_path, "popularity") is None


@pytest.fixture(scope="module")
def fitted(small_dataset: Dataset, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tracking = tmp_path_factory.mktemp("tracking")
    return {name: run.fit(name, small_dataset, section, TRAINING, tracking) for name, section in SECTIONS.items()}


@pytest.mark.parametrize("engine", list(SECTIONS))
def test_every_engine_reports_one_metrics_schema(engine: str, fitted: dict[str, Any]) -> None:
    metrics = fitted[engine].metrics
    assert {"best_epoch", "epochs_run", "valid_ndcg@10", "seconds_per_epoch", "train_seconds", "valid_history"} <= set(
        metrics
    )
    history = metrics["valid_history"]
    assert len(history) == metrics["epochs_run"] == (1 if engine in ("popularity", "ease") else TRAINING.epochs)
    # best_epoch is 1-based: the kept model is history[best_epoch - 1], the best of them.
    assert 1 <= metrics["best_epoch"] <= metrics["epochs_run"]
    assert metrics["valid_ndcg@10"] == history[metrics["best_epoch"] - 1]["valid/ndcg@10"]
    assert metrics["valid_ndcg@10"] == max(h["valid/ndcg@10"] for h in history)
    assert metrics["train_seconds"] >= metrics["seconds_per_epoch"] >= 0  # the whole fit, one epoch
    assert fitted[engine].config["mlflow_run_id"]


def test_closed_form_validation_is_the_one_the_engine_selected_on(fitted: dict[str, Any]) -> None:
    ease = fitted["ease"].metrics
    assert ease["valid_ndcg@10"] == pytest.approx(ease["valid_ndcg@10_by_lambda"][str(ease["lambda"])])


@pytest.mark.parametrize("engine", ["transformer", "neural"])
def test_ml_engines_write_one_artifact_schema(engine: str, fitted: dict[str, Any], tmp_path: Path) -> None:
    model = fitted[engine]
    config = json.loads((model.save(tmp_path / engine) / "config.json").read_text())
    assert {"hyper_parameters", "settings", "training", "dataset_hash", "mlflow_run_id"} <= set(config)
    assert config["settings"] == SECTIONS[engine].model_dump()
    assert config["hyper_parameters"]["d_model"] == 16  # the model config, not the settings
    assert "enabled" not in config["hyper_parameters"]
    assert load_engine(tmp_path / engine).inference_threads == 3  # both read it from "settings"


def test_closed_form_engines_take_no_lightning_callbacks(small_dataset: Dataset, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="closed form"):
        run.fit("popularity", small_dataset, PopularitySettings(), TRAINING, tmp_path, callbacks=[object()])  # type: ignore[list-item]


def test_an_unknown_engine_opens_no_run(small_dataset: Dataset, tmp_path: Path, fake_runs: FakeRuns) -> None:
    with pytest.raises(ConfigError, match="unknown engine"):
        run.train("nope", small_dataset, PopularitySettings(), TRAINING, tmp_path)
    assert fake_runs.started == []


class PoisonWeights(L.Callback):
    """Fills every weight with NaN before each epoch: a diverged model."""

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        with torch.no_grad():
            for p in pl_module.parameters():
                p.fill_(float("nan"))


@pytest.mark.parametrize("engine", ["transformer", "neural"])
def test_a_diverged_model_fails_training_and_is_never_saved_or_promoted(
    engine: str, small_dataset: Dataset, tmp_path: Path
) -> None:
    with pytest.raises(TrainingDiverged, match="NaN or infinite"):
        run.train(
            engine, small_dataset, SECTIONS[engine], TRAINING, tmp_path / "artifacts", callbacks=[PoisonWeights()]
        )
    assert current_dir(tmp_path / "artifacts", engine) is None
    assert not any((tmp_path / "artifacts" / engine).glob("*/weights.safetensors"))
    (meta,) = (tmp_path / "mlruns").glob("*/*/meta.yaml")
    assert "status: 4" in meta.read_text()  # FAILED
