"""Hot reload: load beside, smoke-test, swap; a corrupt or mismatched artifact is refused and the old one serves."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from recengine.data.dataset import Dataset
from recengine.engines import ENGINE_NAMES
from recengine.engines.artifact import set_current, version_dir
from recengine.engines.popularity import Popularity
from recengine.errors import ArtifactError
from recengine.serving.registry import ModelRegistry, smoke_test
from tests.fakes import FakeEngine


def write_popularity(root: Path, ds: Dataset, version: str, current: bool = True) -> Path:
    model = Popularity.fit(ds)
    model.config["version"] = version
    path = model.save(version_dir(root, "popularity", version))
    if current:
        set_current(path)
    return path


def test_loads_the_current_versions_and_reports_absent_engines(small_dataset: Dataset, tmp_path: Path) -> None:
    write_popularity(tmp_path, small_dataset, "v1")
    reg = ModelRegistry(tmp_path)
    results = {r.engine: r.status for r in reg.reload()}
    # Every engine of the table is reported: the one with a model as loaded, the others as absent.
    assert results == {**dict.fromkeys(ENGINE_NAMES, "absent"), "popularity": "loaded"}
    model = reg.get("popularity")
    assert model is not None and model.version == "v1" and model.n_items == small_dataset.n_items
    assert reg.get("ease") is None
    assert [r.status for r in reg.reload(["popularity"])] == ["unchanged"]


def test_reload_swaps_to_the_new_version(small_dataset: Dataset, tmp_path: Path) -> None:
    write_popularity(tmp_path, small_dataset, "v1")
    reg = ModelRegistry(tmp_path)
    reg.reload()
    swapped: list[str] = []
    reg.on_swap(lambda m: swapped.append(m.version))
    old = reg.get("popularity")
    write_popularity(tmp_path, small_dataset, "v2")
    assert reg.stale() == ["popularity"]
    (result,) = reg.reload(["popularity"])
    assert (result.status, result.version, result.previous) == ("loaded", "v2", "v1")
    assert reg.get("popularity") is not old and swapped == ["v2"]
    assert reg.stale() == []


@pytest.mark.parametrize(
    "damage",
    ["truncate_weights", "bad_json", "wrong_engine", "missing_vocab"],
)
def test_a_broken_artifact_is_refused_and_the_old_version_keeps_serving(
    small_dataset: Dataset, tmp_path: Path, damage: str
) -> None:
    write_popularity(tmp_path, small_dataset, "v1")
    reg = ModelRegistry(tmp_path)
    reg.reload()
    bad = write_popularity(tmp_path, small_dataset, "v2", current=False)
    if damage == "truncate_weights":
        w = bad / "weights.safetensors"
        w.write_bytes(w.read_bytes()[:40])
    elif damage == "bad_json":
        (bad / "config.json").write_text("{not json")
    elif damage == "wrong_engine":
        cfg = json.loads((bad / "config.json").read_text())
        cfg["engine"] = "ease"
        (bad / "config.json").write_text(json.dumps(cfg))
    else:
        (bad / "vocab.json").unlink()
    set_current(bad)
    (result,) = reg.reload(["popularity"])
    assert result.status == "refused" and result.error and str(bad) in result.error
    assert reg.get("popularity") is not None and reg.get("popularity").version == "v1"  # type: ignore[union-attr]
    assert reg.errors["popularity"] == result.error
    # the poller does not retry the same refused directory ...
    assert reg.stale() == []
    # ... but picks up the next good one
    write_popularity(tmp_path, small_dataset, "v3")
    assert reg.stale() == ["popularity"]
    assert reg.reload(["popularity"])[0].status == "loaded"
    assert "popularity" not in reg.errors


def test_an_engine_that_fails_its_smoke_test_is_refused(small_dataset: Dataset, tmp_path: Path) -> None:
    write_popularity(tmp_path, small_dataset, "v1")

    def explode(engine: object) -> None:
        raise RuntimeError("smoke failed")

    reg = ModelRegistry(tmp_path, smoke=explode)
    (result, *_) = reg.reload()
    assert result.status == "refused" and "RuntimeError: smoke failed" in (result.error or "")
    assert reg.get("popularity") is None


def test_smoke_test_rejects_malformed_answers() -> None:
    class Short(FakeEngine):
        def recommend(self, histories, k, exclude=None, exclude_history=True):  # type: ignore[no-untyped-def]
            return np.zeros((1, 1), dtype=np.int64), np.zeros((1, 1), dtype=np.float32)

    with pytest.raises(ArtifactError, match="shapes"):
        smoke_test(Short("ease"))

    class OutOfRange(FakeEngine):
        def recommend(self, histories, k, exclude=None, exclude_history=True):  # type: ignore[no-untyped-def]
            return np.full((1, k), 10_000, dtype=np.int64), np.zeros((1, k), dtype=np.float32)

    with pytest.raises(ArtifactError, match="outside"):
        smoke_test(OutOfRange("ease"))
    smoke_test(FakeEngine("ease"))


def test_put_serves_an_engine_object(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path)
    model = reg.put("ease", FakeEngine("ease", version="x"))
    assert reg.get("ease") is model and model.version == "x"
    assert model.items_in_categories(["odd"]).tolist() == list(range(1, 21, 2))
    assert model.items_in_categories(["nope"]).size == 0


def test_moving_the_artifacts_folder_away_keeps_the_loaded_model(small_dataset: Dataset, tmp_path: Path) -> None:
    write_popularity(tmp_path / "a", small_dataset, "v1")
    reg = ModelRegistry(tmp_path / "a")
    reg.reload()
    shutil.rmtree(tmp_path / "a")
    assert [r.status for r in reg.reload(["popularity"])] == ["absent"]
    assert reg.get("popularity") is not None
