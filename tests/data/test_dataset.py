"""The processed data set on disk: round trip, content hash, views and load errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from recengine.data.dataset import FORMAT_VERSION, TEST, TRAIN, VALID, Dataset, compute_hash
from recengine.data.synthetic import SynthConfig, generate
from recengine.data.transforms import build_dataset
from recengine.errors import DataError


def fresh(seed: int = 5) -> Dataset:
    raw, meta = generate(SynthConfig(n_users=60, n_items=30, seed=seed))
    return build_dataset(raw, meta)


def test_save_load_round_trip(tmp_path: Path) -> None:
    ds = fresh()
    ds.save(tmp_path / "d")
    back = Dataset.load(tmp_path / "d")
    for name in ("user", "item", "timestamp", "weight", "split"):
        np.testing.assert_array_equal(getattr(back, name), getattr(ds, name))
        assert getattr(back, name).dtype == getattr(ds, name).dtype
    assert back.users.ids == ds.users.ids and back.items.ids.ids == ds.items.ids.ids
    assert back.items.titles == ds.items.titles and back.items.categories == ds.items.categories
    np.testing.assert_allclose(back.items.numeric["price"], ds.items.numeric["price"])
    assert back.content_hash == ds.content_hash == compute_hash(back)
    manifest = json.loads((tmp_path / "d" / "manifest.json").read_text())
    assert manifest["format_version"] == FORMAT_VERSION
    assert (
        manifest["n_interactions"]
        == ds.n_interactions
        == manifest["n_train"] + manifest["n_valid"] + manifest["n_test"]
    )
    assert back.path == tmp_path / "d"


def test_content_hash_is_stable_and_sensitive(tmp_path: Path) -> None:
    a, b = fresh(), fresh()
    assert a.content_hash == b.content_hash  # same data, built twice
    a.save(tmp_path / "a")
    (tmp_path / "a" / "manifest.json").unlink()
    b.save(tmp_path / "a")  # written again, file bytes may differ: the hash does not
    assert Dataset.load(tmp_path / "a").content_hash == a.content_hash
    b.timestamp = b.timestamp.copy()
    b.timestamp[0] += 1
    b.manifest.pop("content_hash", None)
    assert b.content_hash != a.content_hash
    assert fresh(seed=6).content_hash != a.content_hash


def test_views(small_dataset: Dataset) -> None:
    ds = small_dataset
    train = ds.sequences()
    full = ds.sequences(max_split=TEST)
    assert len(train) == ds.n_users + 1 and train[0].size == 0
    assert sum(s.size for s in full) == ds.n_interactions
    users, histories, targets = ds.eval_cases("valid")
    u = int(users[0])
    assert np.array_equal(histories[0], train[u])
    assert targets[0].tolist() == [int(ds.item[(ds.user == u) & (ds.split == VALID)][0])]
    mat = ds.train_matrix()
    assert mat.shape == (ds.n_users + 1, ds.n_items + 1) and set(np.unique(mat.data)) == {1.0}
    assert mat.nnz == len(
        {(int(a), int(b)) for a, b in zip(ds.user[ds.split == TRAIN], ds.item[ds.split == TRAIN], strict=True)}
    )
    counts = ds.item_counts()
    assert counts[0] == 0 and counts.sum() == int((ds.split == TRAIN).sum())
    weighted = ds.train_matrix(max_split=TEST, binary=False)
    assert weighted.sum() == pytest.approx(float(ds.weight.sum()))
    with pytest.raises(DataError, match="split must be"):
        ds.eval_cases("train")


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a processed data set"):
        Dataset.load(tmp_path)
    ds = fresh()
    ds.save(tmp_path / "d")
    manifest = json.loads((tmp_path / "d" / "manifest.json").read_text())
    (tmp_path / "d" / "manifest.json").write_text(json.dumps({**manifest, "format_version": 999}))
    with pytest.raises(DataError, match="format_version 999 is not supported"):
        Dataset.load(tmp_path / "d")
    (tmp_path / "d" / "manifest.json").write_text(json.dumps(manifest))
    (tmp_path / "d" / "items.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataError, match="cannot read processed data set"):
        Dataset.load(tmp_path / "d")
