"""Transforms: implicit feedback, time order, de-duplication, k-core, id maps, metadata alignment."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recengine.data.dataset import TEST, TRAIN, VALID, IdMap
from recengine.data.transforms import (
    PrepareOptions,
    build_dataset,
    conform,
    dedupe,
    implicit,
    k_core,
    time_order,
)
from recengine.errors import DataError


def raw(rows: list[tuple[str, str, int]], ratings: list[float | None] | None = None) -> pl.DataFrame:
    users, items, times = zip(*rows, strict=True) if rows else ((), (), ())
    data: dict[str, object] = {"user": list(users), "item": list(items), "timestamp": list(times)}
    if ratings is not None:
        data["rating"] = ratings
    return conform(pl.DataFrame(data, schema_overrides={"timestamp": pl.Int64}))


def test_conform_fills_optional_columns() -> None:
    out = conform(pl.DataFrame({"user": ["a", "b"], "item": ["x", "y"]}))
    assert out.get_column("row").to_list() == [0, 1]
    assert out.get_column("timestamp").to_list() == [0, 1]  # no timestamp: input order is time order
    assert out.get_column("rating").is_null().all() and out.get_column("event").is_null().all()
    with pytest.raises(DataError, match="no 'item' column"):
        conform(pl.DataFrame({"user": ["a"]}))


def test_implicit_threshold_keeps_unrated_rows() -> None:
    table = raw([("u", "a", 1), ("u", "b", 2), ("u", "c", 3), ("u", "d", 4)], ratings=[5.0, 3.9, 4.0, None])
    assert implicit(table, 4.0).get_column("item").to_list() == ["a", "c", "d"]
    assert implicit(table, None).height == 4


def test_time_order_breaks_ties_by_input_order() -> None:
    table = raw([("u", "late", 9), ("u", "tie1", 5), ("v", "tie2", 5), ("u", "early", 1), ("u", "tie3", 5)])
    assert time_order(table).get_column("item").to_list() == ["early", "tie1", "tie2", "tie3", "late"]


def test_dedupe_modes() -> None:
    table = time_order(raw([("u", "a", 1), ("u", "a", 2), ("u", "b", 3), ("u", "a", 4), ("v", "a", 5)]))
    assert dedupe(table, "none").height == 5
    assert dedupe(table, "consecutive").select("user", "item", "timestamp").rows() == [
        ("u", "a", 1), ("u", "b", 3), ("u", "a", 4), ("v", "a", 5)
    ]  # fmt: skip
    assert dedupe(table, "all").select("user", "item", "timestamp").rows() == [
        ("u", "a", 1), ("u", "b", 3), ("v", "a", 5)
    ]  # fmt: skip
    with pytest.raises(DataError, match="dedupe must be"):
        dedupe(table, "some")


def test_k_core_needs_several_rounds() -> None:
    # Dropping item "rare" leaves user "c" with one interaction, which then drops item "b" below two users.
    rows = [("a", "x", 1), ("a", "b", 2), ("b", "x", 3), ("b", "y", 4), ("c", "b", 5), ("c", "rare", 6),
            ("d", "y", 7), ("d", "x", 8)]  # fmt: skip
    out = k_core(raw(rows), user_core=2, item_core=2)
    assert sorted(set(out.get_column("item").to_list())) == ["x", "y"]
    assert sorted(set(out.get_column("user").to_list())) == ["b", "d"]
    assert k_core(raw(rows), 0, 1).height == len(rows)


@settings(max_examples=40, deadline=None)
@given(
    pairs=st.lists(st.tuples(st.integers(0, 8), st.integers(0, 8)), min_size=0, max_size=60),
    user_core=st.integers(0, 4),
    item_core=st.integers(0, 4),
)
def test_k_core_reaches_a_fixed_point(pairs: list[tuple[int, int]], user_core: int, item_core: int) -> None:
    table = raw([(f"u{u}", f"i{i}", t) for t, (u, i) in enumerate(pairs)])
    out = k_core(table, user_core, item_core)
    if out.height:
        if user_core > 1:
            assert out.group_by("user").len().get_column("len").min() >= user_core  # type: ignore[operator]
        if item_core > 1:
            assert out.group_by("item").len().get_column("len").min() >= item_core  # type: ignore[operator]
    assert k_core(out, user_core, item_core).equals(out)


def test_build_dataset_id_maps_and_order() -> None:
    rows = [
        ("bob", "x", 5),
        ("ann", "y", 3),
        ("bob", "z", 5),
        ("ann", "x", 1),
        ("bob", "y", 4),
        ("ann", "z", 9),
    ]
    ds = build_dataset(raw(rows), options=PrepareOptions(source={"kind": "test"}))
    assert ds.users.ids == ["", "bob", "ann"]  # first appearance in the input; 0 is padding
    assert ds.items.ids.ids == ["", "x", "y", "z"]
    assert ds.users.index("carol") == 0 and ds.items.ids.encode(["z", "?"]).tolist() == [3, 0]
    assert ds.items.ids.decode([1, 3]) == ["x", "z"]
    seqs = ds.sequences(max_split=TEST)
    assert ds.items.ids.decode(seqs[ds.users.index("bob")]) == ["y", "x", "z"]  # ties (5, 5) keep input order
    assert ds.items.ids.decode(seqs[ds.users.index("ann")]) == ["x", "y", "z"]
    assert ds.weight.tolist() == [1.0] * 6
    assert ds.manifest["steps"]["input_rows"] == 6 and ds.manifest["source"] == {"kind": "test"}
    assert ds.split.tolist() == [TRAIN, VALID, TEST] * 2


def test_build_dataset_filters_and_errors() -> None:
    table = raw([("u", "a", 1), ("u", "b", 2), ("v", "a", 3)], ratings=[1.0, 5.0, 5.0])
    ds = build_dataset(table, options=PrepareOptions(min_rating=4.0))
    assert ds.n_interactions == 2 and ds.manifest["steps"]["after_implicit"] == 2
    with pytest.raises(DataError, match="no interactions left"):
        build_dataset(table, options=PrepareOptions(min_rating=10.0))
    temporal = build_dataset(
        raw([(f"u{k % 3}", f"i{k}", k) for k in range(20)]),
        options=PrepareOptions(split="temporal", temporal_valid_fraction=0.2, temporal_test_fraction=0.2),
    )
    assert np.bincount(temporal.split).tolist() == [12, 4, 4]


def test_attach_metadata_aligns_with_item_index() -> None:
    meta = pl.DataFrame(
        {
            "item": ["z", "x", "x", "ghost"],
            "title": ["Zed", "Ex", "Ex again", "Ghost"],
            "categories": [["c1"], None, ["dup"], ["c9"]],
            "price": [3.0, None, 7.0, 1.0],
            "label": ["l1", "l2", "l3", "l4"],
        }
    )
    ds = build_dataset(raw([("u", "x", 1), ("u", "y", 2), ("u", "z", 3)]), meta)
    assert ds.items.titles == ["", "Ex", None, "Zed"]
    assert ds.items.categories == [[], [], [], ["c1"]]
    assert ds.items.category_vocab() == ["c1"]
    assert set(ds.items.numeric) == {"price"}  # text columns are not features
    assert ds.items.numeric["price"].tolist() == [0.0, 3.0, 3.0, 3.0]  # unknown prices get the median
    plain = build_dataset(raw([("u", "x", 1)]))
    assert plain.items.titles is None and plain.items.category_vocab() == []


def test_id_map_rejects_duplicates() -> None:
    with pytest.raises(DataError, match="duplicate"):
        IdMap(["", "a", "a"])
    ids = IdMap.from_ids(["a", "b"])
    assert len(ids) == 2 and "a" in ids and "" not in ids
