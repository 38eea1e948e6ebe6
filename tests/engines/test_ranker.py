"""The ranking stage (engines/ranker.py): the Engine contract, its features, its training protocol and artifact."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Self

import numpy as np
import pytest
import torch

from recengine.data.dataset import TEST, Dataset, IdMap, ItemCatalog
from recengine.engines import load_engine
from recengine.engines.artifact import set_current, version_dir
from recengine.engines.base import Engine
from recengine.engines.popularity import Popularity
from recengine.engines.ranker import ItemFeatures, Ranker, build_candidates, feature_names
from recengine.errors import ArtifactError, ConfigError, DataError
from recengine.settings import RankerSettings
from recengine.training.run import refit
from tests.engines.conftest import TINY_SECTIONS, TINY_TRAINING
from tests.engines.contract import EngineContract


class TestRankerContract(EngineContract):
    engine_name = "ranker"
    needs_history = True


@pytest.fixture
def ranker(fitted: Callable[[str], Engine]) -> Ranker:
    r = fitted("ranker")
    assert isinstance(r, Ranker)
    return r


@pytest.fixture
def histories(small_dataset: Dataset) -> list[np.ndarray]:
    _, hs, _ = small_dataset.eval_cases("test")
    return hs[:8]


def base_root(ranker: Ranker) -> Path:
    """The artifacts folder the fixture's ranker was trained from (``<root>/<engine>/<version>``)."""
    return next(iter(ranker.base_paths.values())).parent.parent


# ---- features, on a hand-made case -----------------------------------------------------------------------------------
class Fixed(Engine):
    """A base engine whose every history gets the same scores."""

    name = "fixed"

    def __init__(self, scores: list[float], items: ItemCatalog) -> None:
        super().__init__(items=items)
        self.row = torch.tensor([-torch.inf, *scores], dtype=torch.float32)

    def score(self, histories: Sequence[np.ndarray]) -> torch.Tensor:
        return self.row.unsqueeze(0).expand(len(histories), -1)

    def save(self, path: Path) -> Path:
        raise NotImplementedError

    @classmethod
    def load(cls, path: Path) -> Self:
        raise NotImplementedError


def test_features_of_a_hand_made_case() -> None:
    # Six items; categories: 1,2 → a; 3 → a,b; 4 → b; 5, 6 → none.
    items = ItemCatalog(
        ids=IdMap.from_ids(f"i{k}" for k in range(1, 7)),
        categories=[[], ["a"], ["a"], ["a", "b"], ["b"], [], []],
    )
    pop = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    age = torch.tensor([float("nan"), 10.0, 20.0, 30.0, 40.0, 50.0, float("nan")])
    feats = ItemFeatures(pop, age, items)
    bases = {
        "x": Fixed([6.0, 5.0, 4.0, 3.0, 2.0, 1.0], items),  # top-2 without the history {1}: 2, 3
        "y": Fixed([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], items),  # top-2: 6, 5
    }
    history = np.array([1, 4], dtype=np.int64)  # categories a (item 1) and b (item 4): half the history in each
    cand = build_candidates(bases, feats, [history], m=2, n_items=6)
    assert cand.rows.tolist() == [0, 0, 0, 0]
    assert cand.items.tolist() == [2, 3, 5, 6], "the union of each engine's top-2, history left out"
    assert feature_names(["x", "y"]) == [
        "x_score", "x_rank", "y_score", "y_rank",
        "votes", "log_popularity", "age_days", "history_length", "category_affinity",
    ]  # fmt: skip
    x = cand.features
    np.testing.assert_array_equal(x[:, 0], [5.0, 4.0, 2.0, 1.0])  # every engine scores every candidate
    np.testing.assert_array_equal(x[:, 1], [0, 1, 2, 2])  # rank in x's top-2; 2 (= M) where absent
    np.testing.assert_array_equal(x[:, 2], [2.0, 3.0, 5.0, 6.0])
    np.testing.assert_array_equal(x[:, 3], [2, 2, 1, 0])
    np.testing.assert_array_equal(x[:, 4], [1, 1, 1, 1])  # votes
    np.testing.assert_array_equal(x[:, 5], [2.0, 3.0, 5.0, 6.0])  # log popularity, as stored
    np.testing.assert_array_equal(x[:, 6], [20.0, 30.0, 50.0, np.nan])  # age; NaN = never trained on
    np.testing.assert_array_equal(x[:, 7], [2, 2, 2, 2])  # history length
    np.testing.assert_array_equal(x[:, 8], [0.5, 0.5, np.nan, np.nan])  # item 3: max(a 1/2, b 1/2); 5, 6: none


def test_item_features_come_from_the_training_part_only(small_dataset: Dataset) -> None:
    poisoned = _poison_test_rows(small_dataset)
    a, b = ItemFeatures.from_dataset(small_dataset), ItemFeatures.from_dataset(poisoned)
    assert torch.equal(a.log_popularity, b.log_popularity)
    assert torch.equal(a.age_days.nan_to_num(-1), b.age_days.nan_to_num(-1))


# ---- serving behaviour -----------------------------------------------------------------------------------------------
def test_ranking_follows_the_boosters_predictions(ranker: Ranker, histories: list[np.ndarray]) -> None:
    cand = ranker.candidates(histories)
    predicted = ranker.booster.predict(cand.features)
    scores = ranker.score(histories)
    np.testing.assert_allclose(scores[cand.rows, cand.items].numpy(), predicted, rtol=1e-6)
    ids, _ = ranker.recommend(histories, k=5)
    for i in range(len(histories)):
        mine = cand.rows == i
        order = np.argsort(-predicted[mine], kind="stable")
        best = predicted[mine][order[:5]]
        np.testing.assert_allclose(np.sort(predicted[mine][np.isin(cand.items[mine], ids[i])])[::-1], best)


def test_items_outside_the_candidates_are_never_returned_before_them(
    ranker: Ranker, histories: list[np.ndarray]
) -> None:
    cand = ranker.candidates(histories)
    scores = ranker.score(histories)
    for i, history in enumerate(histories):
        union = cand.items[cand.rows == i]
        assert not np.isin(union, history).any(), "history items are never candidates"
        outside = np.setdiff1d(np.arange(1, ranker.n_items + 1), union)
        assert scores[i, outside].max() < scores[i, union].min()
        ids, _ = ranker.recommend([history], k=union.size)
        assert set(ids[0].tolist()) == set(union.tolist())


# ---- training protocol -----------------------------------------------------------------------------------------------
def _poison_test_rows(dataset: Dataset) -> Dataset:
    """The same data set, but every test row names another item (and another time): whatever reads them changes."""
    rng = np.random.default_rng(99)
    test = dataset.split == TEST
    item = dataset.item.copy()
    item[test] = rng.integers(1, dataset.n_items + 1, size=int(test.sum()))
    timestamp = dataset.timestamp.copy()
    timestamp[test] += 10_000_000
    return replace(dataset, item=item, timestamp=timestamp, manifest={**dataset.manifest})


def test_cross_validation_chooses_from_the_grid_on_validation_users_only(
    ranker: Ranker, small_dataset: Dataset, tmp_path: Path
) -> None:
    config = TINY_SECTIONS["ranker"]
    grid = {f"num_leaves={n},learning_rate={lr:g}" for n in config.num_leaves for lr in config.learning_rates}
    assert set(ranker.metrics["cv"]) == grid
    chosen = ranker.config["chosen"]
    assert chosen["num_leaves"] in config.num_leaves and chosen["learning_rate"] in config.learning_rates
    best = max(ranker.metrics["cv"].values(), key=lambda row: row["cv_ndcg@10"])
    assert ranker.metrics["cv_ndcg@10"] == pytest.approx(best["cv_ndcg@10"], abs=1e-6)
    assert chosen["rounds"] == best["rounds"] == ranker.booster.num_trees()
    # The reported validation figure is the held-out (cross-validated) one, not the in-sample one.
    assert ranker.metrics["valid_ndcg@10"] == ranker.metrics["cv_ndcg@10"]
    # Test targets are never read: a data set whose test rows are garbage gives the very same model.
    poisoned = _poison_test_rows(small_dataset)
    assert poisoned.content_hash == small_dataset.content_hash
    again = Ranker.fit(poisoned, config, artifacts_dir=base_root(ranker))
    assert again.booster.model_to_string() == ranker.booster.model_to_string()
    assert again.metrics["cv"] == ranker.metrics["cv"]


def test_training_skips_base_engines_it_cannot_use_and_refuses_when_none_is_left(
    ranker: Ranker, small_dataset: Dataset, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=r"no usable base engine.*transformer: no CURRENT model"):
        Ranker.fit(small_dataset, TINY_SECTIONS["ranker"], artifacts_dir=tmp_path)
    # Only popularity, and it was trained on another data set: refused, and the reason is given.
    pop = ranker.bases["popularity"]
    pop_dir = pop.save(version_dir(tmp_path, "popularity", "p1"))
    set_current(pop_dir)
    config_path = pop_dir / "config.json"
    config_path.write_text(config_path.read_text().replace(small_dataset.content_hash, "another-hash"))
    with pytest.raises(ConfigError, match=r"popularity: .*trained on data set another-hash"):
        Ranker.fit(small_dataset, TINY_SECTIONS["ranker"], artifacts_dir=tmp_path)
    # A refit EASE has trained on the validation targets: refused too. A usable neural model is kept, and the
    # refusals are recorded.
    ease = ranker.bases["ease"]
    refit_ease = type(ease).load(ranker.base_paths["ease"])
    refit_ease.config["refit"] = {"on": "all"}
    set_current(refit_ease.save(version_dir(tmp_path, "ease", "e-refit")))
    with pytest.raises(ConfigError, match=r"ease: .*is a refit model"):
        Ranker.fit(small_dataset, TINY_SECTIONS["ranker"], artifacts_dir=tmp_path)
    neural = ranker.bases["neural"]
    set_current(shutil.copytree(ranker.base_paths["neural"], version_dir(tmp_path, "neural", neural.version)))
    only = Ranker.fit(small_dataset, TINY_SECTIONS["ranker"], artifacts_dir=tmp_path)
    assert list(only.bases) == ["neural"]
    assert set(only.metrics["skipped_base_engines"]) == {"transformer", "ease", "popularity"}
    assert only.config["features"][:2] == ["neural_score", "neural_rank"]


def test_a_data_set_without_validation_and_a_refit_are_refused(ranker: Ranker, small_dataset: Dataset) -> None:
    everything = replace(small_dataset, split=np.zeros_like(small_dataset.split))
    with pytest.raises(DataError, match="validation"):
        Ranker.fit(everything, TINY_SECTIONS["ranker"], artifacts_dir=base_root(ranker))
    with pytest.raises(ConfigError, match="cannot be refit"):
        refit("ranker", small_dataset, TINY_SECTIONS["ranker"], TINY_TRAINING, base_root(ranker), ranker)


def test_the_settings_refuse_an_unknown_or_repeated_base_engine() -> None:
    for bad in (["ranker"], ["ease", "ease"], [], ["bm25"]):
        with pytest.raises(ValueError, match="distinct engines"):
            RankerSettings(base_engines=bad)


# ---- the artifact ----------------------------------------------------------------------------------------------------
def test_the_artifact_carries_and_pins_its_base_engines(
    ranker: Ranker, histories: list[np.ndarray], tmp_path: Path
) -> None:
    path = ranker.save(tmp_path / "ranker")
    assert (path / "booster.txt").read_text().startswith("tree")
    pinned = {r["engine"]: r["version"] for r in ranker.config["base_engines"]}
    assert pinned == {name: engine.version for name, engine in ranker.bases.items()}
    loaded = load_engine(path)
    assert isinstance(loaded, Ranker)
    assert all(p.parent == path / "base" for p in loaded.base_paths.values()), "its own copies, not CURRENT"
    assert torch.equal(loaded.score(histories), ranker.score(histories))
    # A newer base model behind CURRENT (a hot reload) changes nothing the loaded ranker scores with.
    root, served = base_root(ranker), ranker.bases["popularity"]
    assert isinstance(served, Popularity)
    newer = Popularity(counts=served.counts.flip(0), items=served.items, config=dict(served.config, version=None))
    try:
        set_current(newer.save(version_dir(root, "popularity", "99990101T000000000")))
        assert torch.equal(load_engine(path).score(histories), ranker.score(histories))
    finally:
        set_current(ranker.base_paths["popularity"])


def test_load_refuses_a_missing_or_swapped_base_engine_and_a_broken_booster(ranker: Ranker, tmp_path: Path) -> None:
    saved = ranker.save(tmp_path / "ranker")
    missing = shutil.copytree(saved, tmp_path / "missing")
    shutil.rmtree(missing / "base" / "ease")
    with pytest.raises(ArtifactError, match=r"base engine 'ease' \(version .*\) is missing"):
        Ranker.load(missing)
    swapped = shutil.copytree(saved, tmp_path / "swapped")
    shutil.rmtree(swapped / "base" / "ease")
    ranker.bases["popularity"].save(swapped / "base" / "ease")
    with pytest.raises(ArtifactError, match="holds popularity version"):
        Ranker.load(swapped)
    broken = shutil.copytree(saved, tmp_path / "broken")
    (broken / "booster.txt").write_text("not a model")
    with pytest.raises(ArtifactError, match="not a LightGBM model"):
        Ranker.load(broken)
    (broken / "booster.txt").unlink()
    with pytest.raises(ArtifactError, match=r"missing booster\.txt"):
        Ranker.load(broken)
