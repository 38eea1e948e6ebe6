"""The transformer engine: its run of the Engine contract, and training (beats popularity, best epoch, MLflow)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from recengine.data.dataset import Dataset
from recengine.engines import load_engine
from recengine.engines.popularity import Popularity
from recengine.engines.transformer.engine import TransformerEngine
from recengine.engines.transformer.task import resolve_max_len
from recengine.errors import ArtifactError
from recengine.evaluation import evaluate
from recengine.settings import TrainingSettings, TransformerSettings
from recengine.training.run import fit, train
from tests.engines.conftest import fitted_engine
from tests.engines.contract import EngineContract

ENGINE = TransformerSettings(
    max_len=20, d_model=32, n_layers=1, n_heads=2, dropout=0.1, lr=None, warmup_steps=None, patience=None
)
TRAINING = TrainingSettings(
    epochs=8, batch_size=64, lr=3e-3, patience=3, valid_users=None, accelerator="cpu", devices=1
)


class Trained:
    def __init__(
        self,
        engine: TransformerEngine,
        messages: list[tuple[str, int | None, int | None]],
        runs: Path,
        test: dict[str, Any],
    ):
        self.engine = engine
        self.messages = messages
        self.runs = runs
        self.test = test


def run_dir(store: Path, run_id: str) -> Path:
    """A run's folder in a local MLflow file store: <store>/<experiment id>/<run id>."""
    found = list(store.glob(f"*/{run_id}"))
    assert len(found) == 1, found
    return found[0]


@pytest.fixture(scope="module")
def trained(medium_dataset: Dataset, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    runs = tmp_path_factory.mktemp("artifacts")
    messages: list[tuple[str, int | None, int | None]] = []
    result = train(
        "transformer",
        medium_dataset,
        ENGINE,
        TRAINING,
        runs,
        output=runs / "model",
        progress=lambda m, d, t: messages.append((m, d, t)),
    )
    assert isinstance(result.engine, TransformerEngine)
    return Trained(result.engine, messages, runs, result.metrics)


class TestTransformerContract(EngineContract):
    engine_name = "transformer"
    needs_history = True


def test_beats_popularity_on_sequential_data(trained: Trained, medium_dataset: Dataset) -> None:
    ours = evaluate(trained.engine.score, medium_dataset, split="test")
    pop = evaluate(Popularity.fit(medium_dataset).score, medium_dataset, split="test")
    assert ours["ndcg@10"] > 1.5 * pop["ndcg@10"], (ours["ndcg@10"], pop["ndcg@10"])
    assert ours["hr@10"] > pop["hr@10"]


def test_training_summary_and_progress(trained: Trained) -> None:
    summary = trained.engine.metrics
    assert 1 <= summary["best_epoch"] <= summary["epochs_run"] <= TRAINING.epochs
    history = summary["valid_history"]
    assert len(history) == summary["epochs_run"]
    # best_epoch counts from 1 and names the epoch whose figure is reported (the kept weights' figure).
    assert history[summary["best_epoch"] - 1]["valid/ndcg@10"] == summary["valid_ndcg@10"]
    epoch_messages = [m for m, d, t in trained.messages if "valid ndcg@10" in m and "batch" not in m]
    assert len(epoch_messages) == summary["epochs_run"]
    assert "loss" in epoch_messages[-1]
    assert all(t == TRAINING.epochs for _, _, t in trained.messages)


def test_the_artifact_holds_the_best_epochs_weights(small_dataset: Dataset, tmp_path: Path) -> None:
    # A high learning rate without weight averaging: on the demo generator's data validation peaks at epoch 6 and
    # early stopping ends the run three epochs later, so the last epoch's weights score differently from the best's.
    engine = fitted_engine(
        "transformer",
        small_dataset,
        tmp_path,
        section=ENGINE.model_copy(update={"lr": 0.03, "average_epochs": None}),
        training=TRAINING.model_copy(update={"epochs": 10}),
    )
    summary = engine.metrics
    figures = [h["valid/ndcg@10"] for h in summary["valid_history"]]
    assert summary["best_epoch"] < summary["epochs_run"] == len(figures), (
        f"this run must peak before its last epoch to tell the best weights from the last: {figures}"
    )
    best = summary["valid_ndcg@10"]
    assert figures[summary["best_epoch"] - 1] == best > figures[-1] + 1e-3
    loaded = load_engine(engine.save(tmp_path / "model"))
    # Validation's own protocol (every user, batches of 1,024), re-run on the exported weights.
    rescored = float(evaluate(loaded.score, small_dataset, split="valid", ks=(10,), batch_size=1024)["ndcg@10"])
    assert rescored == pytest.approx(best, abs=1e-6)


def test_mlflow_run_has_params_metrics_and_test_results(trained: Trained) -> None:
    run = run_dir(trained.runs / "mlruns", trained.engine.config["mlflow_run_id"])
    metrics = run / "metrics"
    loss = (metrics / "train" / "loss_epoch").read_text().splitlines()
    ndcg = (metrics / "valid" / "ndcg_at_10").read_text().splitlines()
    assert len(loss) == len(ndcg) == trained.engine.metrics["epochs_run"]
    assert float(ndcg[0].split()[1]) > 0
    params = run / "params"
    assert (params / "engine.d_model").read_text() == "32"
    assert (params / "training.lr").read_text() == str(TRAINING.lr)  # engine lr None: training.lr applies
    assert (params / "dataset.hash").read_text() == trained.engine.config["dataset_hash"]
    assert (run / "tags" / "dataset_hash").read_text() == trained.engine.config["dataset_hash"]

    # The test figures and the artifact went to the training's own run, which then finished.
    assert float((metrics / "test" / "ndcg_at_10").read_text().split()[1]) == trained.test["ndcg@10"]
    assert (run / "artifacts" / "model" / "weights.safetensors").is_file()
    assert json.loads((trained.runs / "model" / "config.json").read_text())["mlflow_run_id"] == run.name
    assert "status: 3" in (run / "meta.yaml").read_text()  # FINISHED


def test_tracking_uri_setting_points_elsewhere(small_dataset: Dataset, tmp_path: Path) -> None:
    store = tmp_path / "elsewhere"
    training = TRAINING.model_copy(update={"epochs": 1, "tracking_uri": store.as_uri(), "experiment": "exp-x"})
    engine_cfg = ENGINE.model_copy(update={"lr": 0.02})
    engine = fit("transformer", small_dataset, engine_cfg, training, tmp_path / "art")
    assert not (tmp_path / "art" / "mlruns").exists()
    run = run_dir(store, engine.config["mlflow_run_id"])
    assert (run / "metrics" / "valid" / "ndcg_at_10").is_file()
    assert (run / "params" / "training.lr").read_text() == "0.02"  # the engine's lr overrides training.lr


def test_serving_load_does_not_import_lightning(trained: Trained, tmp_path: Path) -> None:
    path = trained.engine.save(tmp_path / "model")
    code = (
        "import sys, numpy as np\n"
        "from recengine.engines import load_engine\n"
        f"e = load_engine({str(path)!r})\n"
        "e.recommend([np.array([1, 2, 3])], k=5)\n"
        "bad = [m for m in ('lightning', 'mlflow') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_missing_hyper_parameters_are_refused(trained: Trained, tmp_path: Path) -> None:
    path = trained.engine.save(tmp_path / "model")
    config = json.loads((path / "config.json").read_text())
    del config["hyper_parameters"]
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match="hyper_parameters"):
        TransformerEngine.load(path)


def test_auto_max_len_follows_sequence_lengths(small_dataset: Dataset, medium_dataset: Dataset) -> None:
    auto = TransformerSettings(max_len="auto")
    for ds in (small_dataset, medium_dataset):
        lengths = np.bincount(ds.user[ds.split == 0])[1:]
        got = resolve_max_len(auto, ds)
        assert 20 <= got <= 200 and got % 10 == 0
        assert got >= min(200, np.percentile(lengths, 90))
    assert resolve_max_len(TransformerSettings(max_len=33), small_dataset) == 33


def test_extra_callbacks_run_each_epoch_and_gated_blocks_round_trip(small_dataset: Dataset, tmp_path: Path) -> None:
    import lightning as L

    epochs: list[int] = []

    class Seen(L.Callback):
        def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            epochs.append(trainer.current_epoch)

    training = TRAINING.model_copy(update={"epochs": 2, "lr_schedule": "plateau"})
    engine_cfg = ENGINE.model_copy(update={"block": "gated", "attn_dropout": 0.2})
    engine = fit("transformer", small_dataset, engine_cfg, training, tmp_path, callbacks=[Seen()])
    assert isinstance(engine, TransformerEngine)
    assert epochs == [0, 1]
    loaded = TransformerEngine.load(engine.save(tmp_path / "m"))
    assert loaded.model.config.block == "gated"
    histories = [np.array([1, 2, 3]), np.array([4])]
    torch.testing.assert_close(engine.score(histories), loaded.score(histories))
