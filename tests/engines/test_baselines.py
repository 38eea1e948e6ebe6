"""The baseline engines (popularity, EASE): their run of the Engine contract, what only they do, and artifacts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from recengine.data.dataset import TRAIN, Dataset
from recengine.engines import engine_class, load_engine
from recengine.engines.artifact import current_dir, read_artifact, set_current, version_dir, write_artifact
from recengine.engines.base import Engine, history_bags, topk
from recengine.engines.ease import EASE, ease_weights
from recengine.engines.popularity import Popularity
from recengine.errors import ArtifactError, CatalogueTooLarge, ConfigError
from recengine.evaluation import evaluate
from recengine.settings import EaseSettings, PopularitySettings
from tests.engines.contract import EngineContract


@pytest.fixture(scope="module")
def ease(small_dataset: Dataset) -> EASE:
    return EASE.fit(small_dataset, EaseSettings(lambdas=[5.0, 50.0, 500.0]))


@pytest.fixture(scope="module")
def pop(small_dataset: Dataset) -> Popularity:
    return Popularity.fit(small_dataset)


# ---- the Engine contract (tests/engines/contract.py) -----------------------------------------------------------------
class TestPopularityContract(EngineContract):
    engine_name = "popularity"
    needs_history = False


class TestEASEContract(EngineContract):
    engine_name = "ease"
    needs_history = False


@pytest.mark.parametrize("name", ["pop", "ease"])
def test_save_adopts_the_version_it_wrote(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    engine: Engine = request.getfixturevalue(name)
    loaded = load_engine(engine.save(tmp_path / "m"))
    assert loaded.version == engine.version != "unversioned"


def test_topk_caps_k_at_catalogue_size() -> None:
    ids, _ = topk(torch.tensor([[-torch.inf, 3.0, 1.0, 2.0]]), 99)
    assert ids.tolist() == [[1, 3, 2]]


def test_history_bags_drop_padding_and_duplicates() -> None:
    flat, offsets = history_bags([np.array([0, 2, 2, 3]), np.array([], dtype=np.int64), np.array([4])])
    assert flat.tolist() == [2, 3, 4]
    assert offsets.tolist() == [0, 2, 2]


# ---- popularity ---------------------------------------------------------------------------------------------------
def test_popularity_counts_training_interactions_only(pop: Popularity, small_dataset: Dataset) -> None:
    expected = np.bincount(small_dataset.item[small_dataset.split == TRAIN], minlength=small_dataset.n_items + 1)
    assert pop.counts[1:].tolist() == expected[1:].astype(float).tolist()
    ids, _ = pop.recommend([np.array([], dtype=np.int64)], k=3)
    assert sorted(expected[ids[0]]) == sorted(np.sort(expected[1:])[-3:])


def test_popularity_window_counts_recent_items(small_dataset: Dataset) -> None:
    recent = Popularity.fit(small_dataset, PopularitySettings(window_days=1))
    assert recent.counts.sum() < Popularity.fit(small_dataset).counts.sum()
    assert recent.counts.sum() > 0


# ---- EASE -------------------------------------------------------------------------------------------------------
def test_ease_weights_solve_the_closed_form() -> None:
    rng = np.random.default_rng(0)
    x = (rng.random((40, 6)) < 0.4).astype(np.float64)
    gram = (x.T @ x).astype(np.float32)
    b = ease_weights(gram, 2.0).double()
    np.testing.assert_array_equal(gram, (x.T @ x).astype(np.float32))  # the Gram matrix is left as it was
    assert torch.allclose(b.diagonal(), torch.zeros(6, dtype=torch.float64))
    # Reference: B = I - P diag(1/diag(P)), P = (G + λI)^-1.
    p = np.linalg.inv(x.T @ x + 2.0 * np.eye(6))
    ref = np.eye(6) - p / np.diag(p)[None, :]
    np.testing.assert_allclose(b.numpy(), ref, atol=1e-5)


def test_ease_picks_lambda_on_validation_and_beats_popularity(
    ease: EASE, pop: Popularity, small_dataset: Dataset
) -> None:
    tried = ease.metrics["valid_ndcg@10_by_lambda"]
    assert set(tried) == {"5.0", "50.0", "500.0"}
    assert ease.metrics["lambda"] == float(max(tried, key=tried.__getitem__))
    assert evaluate(ease.score, small_dataset)["ndcg@10"] > 1.5 * evaluate(pop.score, small_dataset)["ndcg@10"]


def test_ease_refuses_large_catalogues(small_dataset: Dataset) -> None:
    with pytest.raises(CatalogueTooLarge, match=r"max_items = 10\b.*GiB|GiB.*max_items = 10\b"):
        EASE.fit(small_dataset, EaseSettings(max_items=10))


# ---- artifacts ----------------------------------------------------------------------------------------------------
def test_artifact_refuses_missing_files_and_wrong_shapes(pop: Popularity, tmp_path: Path) -> None:
    path = pop.save(tmp_path / "m")
    (path / "vocab.json").unlink()
    with pytest.raises(ArtifactError, match=r"missing vocab\.json"):
        Popularity.load(path)

    path = pop.save(tmp_path / "m2")
    cfg = json.loads((path / "config.json").read_text())
    cfg["tensor_shapes"]["counts"] = [7]
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ArtifactError, match=r"'counts' has shape \[\d+\], config.json says \[7\]"):
        Popularity.load(path)

    path = pop.save(tmp_path / "m3")
    (path / "weights.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(ArtifactError, match="cannot read weights"):
        Popularity.load(path)

    with pytest.raises(ArtifactError, match="not found"):
        read_artifact(tmp_path / "absent")


def test_artifact_refuses_other_engines_and_versions(pop: Popularity, small_dataset: Dataset, tmp_path: Path) -> None:
    path = pop.save(tmp_path / "m")
    with pytest.raises(ArtifactError, match=r"for engine 'popularity', not 'ease'"):
        EASE.load(path)
    cfg = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**cfg, "format_version": 99}))
    with pytest.raises(ArtifactError, match="format_version 99"):
        Popularity.load(path)
    (path / "config.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        load_engine(path)
    (path / "config.json").write_text(json.dumps({**cfg, "engine": "nope"}))
    with pytest.raises(ArtifactError, match="unknown engine 'nope'"):
        load_engine(path)
    with pytest.raises(ArtifactError, match=r"missing config\.json"):
        load_engine(tmp_path / "empty")


def test_artifact_with_missing_tensor(small_dataset: Dataset, tmp_path: Path) -> None:
    path = write_artifact(tmp_path / "m", "popularity", {"other": torch.zeros(3)}, {}, small_dataset.items)
    with pytest.raises(ArtifactError, match="no tensor 'counts'"):
        Popularity.load(path)


def test_current_pointer(pop: Popularity, tmp_path: Path) -> None:
    assert current_dir(tmp_path, "popularity") is None
    first = pop.save(version_dir(tmp_path, "popularity", "v1"))
    set_current(first)
    assert current_dir(tmp_path, "popularity") == first
    second = pop.save(version_dir(tmp_path, "popularity", "v2"))
    set_current(second)
    assert current_dir(tmp_path, "popularity") == second


def test_engine_class_lookup() -> None:
    assert engine_class("ease") is EASE
    with pytest.raises(ConfigError, match=r"unknown engine 'x'"):
        engine_class("x")
