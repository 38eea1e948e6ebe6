"""Splits: leave-one-out by time and the global temporal cut-off; proof that nothing leaks into training."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recengine.data.dataset import TEST, TRAIN, VALID, Dataset
from recengine.data.splits import leave_one_out, temporal_split
from recengine.data.transforms import PrepareOptions, build_dataset
from recengine.errors import DataError


def test_leave_one_out_by_user() -> None:
    user = np.array([1, 1, 1, 1, 2, 2, 3, 3, 3])
    assert leave_one_out(user).tolist() == [TRAIN, TRAIN, VALID, TEST, TRAIN, TRAIN, TRAIN, VALID, TEST]
    assert leave_one_out(np.array([], dtype=np.int32)).tolist() == []
    with pytest.raises(DataError, match="sorted by user"):
        leave_one_out(np.array([2, 1]))


def test_leave_one_out_on_a_data_set_uses_time_not_file_order(small_dataset: Dataset) -> None:
    ds = small_dataset
    for u in range(1, ds.n_users + 1):
        rows = np.flatnonzero(ds.user == u)
        ts, sp = ds.timestamp[rows], ds.split[rows]
        assert np.all(np.diff(ts) >= 0)
        if rows.size >= 3:
            assert sp[-1] == TEST and sp[-2] == VALID and np.all(sp[:-2] == TRAIN)
            # No leakage: every training event of the user is no later than the validation and test events.
            assert ts[sp == TRAIN].max() <= ts[sp == VALID].min() <= ts[sp == TEST].min()
        else:
            assert np.all(sp == TRAIN)


def test_short_users_stay_in_train() -> None:
    table = pl.DataFrame({"user": ["a", "a", "b", "b", "b"], "item": ["x", "y", "x", "y", "z"],
                          "timestamp": [1, 2, 3, 4, 5]})  # fmt: skip
    ds = build_dataset(table)
    assert ds.split[ds.user == ds.users.index("a")].tolist() == [TRAIN, TRAIN]
    users, histories, targets = ds.eval_cases("test")
    assert ds.users.decode(users) == ["b"]
    assert ds.items.ids.decode(histories[0]) == ["x", "y"] and ds.items.ids.decode(targets[0]) == ["z"]


@settings(max_examples=60, deadline=None)
@given(
    times=st.lists(st.integers(0, 50), min_size=1, max_size=80),
    valid=st.floats(0.05, 0.45),
    test=st.floats(0.05, 0.45),
)
def test_temporal_split_never_leaks(times: list[int], valid: float, test: float) -> None:
    ts = np.array(times, dtype=np.int64)
    split = temporal_split(ts, valid, test)
    train_t, valid_t, test_t = ts[split == TRAIN], ts[split == VALID], ts[split == TEST]
    if train_t.size and valid_t.size:
        assert train_t.max() < valid_t.min()
    if valid_t.size and test_t.size:
        assert valid_t.max() < test_t.min()
    if train_t.size and test_t.size:
        assert train_t.max() < test_t.min()
    assert test_t.size >= 1  # the newest timestamp is always tested


def test_temporal_split_sizes_and_errors() -> None:
    split = temporal_split(np.arange(100), 0.1, 0.2)
    assert np.bincount(split).tolist() == [70, 10, 20]
    assert temporal_split(np.array([], dtype=np.int64), 0.1, 0.1).tolist() == []
    for bad in ((0.0, 0.1), (0.1, 1.0), (0.6, 0.5)):
        with pytest.raises(DataError, match="fractions"):
            temporal_split(np.arange(5), *bad)


def test_temporal_data_set_has_no_leakage(small_dataset: Dataset) -> None:
    from recengine.data.synthetic import SynthConfig, generate

    raw, meta = generate(SynthConfig(n_users=80, n_items=40, seed=3))
    ds = build_dataset(raw, meta, PrepareOptions(split="temporal"))
    ts, sp = ds.timestamp, ds.split
    assert ts[sp == TRAIN].max() < ts[sp == VALID].min() <= ts[sp == VALID].max() < ts[sp == TEST].min()
    assert 0.05 < (sp == TEST).mean() < 0.15
    assert small_dataset.manifest["split_method"] == "leave_one_out" and ds.manifest["split_method"] == "temporal"
