"""Cold-start evaluation: hidden items lose their interactions but keep their metadata; the CLI runs it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from recengine.cli import app
from recengine.data.dataset import TEST, TRAIN, VALID, Dataset
from recengine.engines.neural.coldstart import cold_start_cases, evaluate_cold_start, genre_scores, hide_items
from recengine.errors import DataError
from recengine.settings import NeuralSettings, TrainingSettings


def test_hide_items_removes_every_interaction_and_keeps_the_metadata(small_dataset: Dataset) -> None:
    train, hidden = hide_items(small_dataset, 0.1, seed=0)
    assert hidden.size == round(0.1 * small_dataset.n_items)
    assert not np.isin(train.item, hidden).any()
    assert train.items is small_dataset.items and train.n_items == small_dataset.n_items
    # Leave-one-out is redone on what is left: one test and one validation row per long-enough user.
    assert (train.split == TEST).sum() == (train.split == VALID).sum() > 0
    assert (train.split == TRAIN).sum() > 0


def test_hide_items_refuses_bad_fractions(small_dataset: Dataset) -> None:
    with pytest.raises(DataError, match="fraction"):
        hide_items(small_dataset, 1.5)


def test_cases_pair_the_remaining_history_with_the_hidden_targets(small_dataset: Dataset) -> None:
    _, hidden = hide_items(small_dataset, 0.1, seed=0)
    histories, targets = cold_start_cases(small_dataset, hidden)
    assert histories and len(histories) == len(targets)
    for h, t in zip(histories, targets, strict=True):
        assert len(h) and len(t)
        assert not np.isin(h, hidden).any() and np.isin(t, hidden).all()


def test_genre_baseline_prefers_the_users_genres(small_dataset: Dataset) -> None:
    assert small_dataset.items.categories is not None
    genre = small_dataset.items.categories[1][0]
    fan = np.asarray([i for i, cs in enumerate(small_dataset.items.categories) if genre in cs][:5])
    scores = genre_scores(small_dataset, small_dataset, [fan], personal=True)[0]
    in_genre = [i for i, cs in enumerate(small_dataset.items.categories) if genre in cs]
    out_genre = [i for i, cs in enumerate(small_dataset.items.categories) if cs and genre not in cs]
    assert float(scores[in_genre].min()) > float(scores[out_genre].max())


def test_evaluate_cold_start_reports_model_and_baselines(small_dataset: Dataset, tmp_path: Path) -> None:
    result = evaluate_cold_start(
        small_dataset,
        NeuralSettings(d_model=32, max_len=20, feature_dropout=0.5),
        TrainingSettings(epochs=4, batch_size=32, lr=3e-3, valid_users=None, num_threads=1),
        tracking_dir=tmp_path,
        k=5,
    )
    assert result["n_hidden_items"] == 12 and result["n_users"] > 0
    for key in ("model_recall@5", "genre_pop_recall@5", "global_genre_recall@5", "random_recall@5"):
        assert 0.0 <= result[key] <= 1.0
    # 5 of 12 hidden candidates at random: the expected recall is 5/12 for every target.
    assert result["random_recall@5"] == pytest.approx(5 / 12, abs=1e-4)
    assert result["model_recall@5"] > result["random_recall@5"]


def test_cli_evaluate_cold_start(small_dataset: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the default artifacts folder and its MLflow store land in tmp_path
    monkeypatch.setenv("RECENGINE_TRAINING__NUM_THREADS", "1")
    monkeypatch.setenv("RECENGINE_ENGINES__NEURAL__D_MODEL", "16")
    out = tmp_path / "cold.json"
    assert small_dataset.path is not None
    result = CliRunner().invoke(
        app, ["evaluate-cold-start", "--data", str(small_dataset.path), "--epochs", "1", "--output", str(out)]
    )
    assert result.exit_code == 0, result.output
    figures = json.loads(out.read_text())
    assert figures["n_hidden_items"] == 12 and "model_recall@20" in figures


def test_cli_evaluate_cold_start_reports_a_missing_data_set(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["evaluate-cold-start", "--data", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "not a processed data set" in result.output
