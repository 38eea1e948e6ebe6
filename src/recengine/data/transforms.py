"""Transforms shared by every engine: raw interaction table → processed :class:`Dataset`.

The raw table (what every reader returns) is a polars DataFrame with columns
``user`` (str), ``item`` (str), ``timestamp`` (int64 seconds), ``rating`` / ``weight`` (float64, may be null),
``event`` (str, may be null) and ``row`` (int64: position in the input, the tie-breaker for equal timestamps).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import polars as pl

from recengine.data.dataset import Dataset, IdMap, ItemCatalog
from recengine.data.splits import leave_one_out, temporal_split
from recengine.errors import DataError

RAW_SCHEMA: dict[str, pl.DataType] = {
    "user": pl.String(),
    "item": pl.String(),
    "timestamp": pl.Int64(),
    "rating": pl.Float64(),
    "weight": pl.Float64(),
    "event": pl.String(),
    "row": pl.Int64(),
}


@dataclass
class PrepareOptions:
    """The transform steps, in the order they run (the ``data`` section of the settings maps onto this)."""

    min_rating: float | None = None
    dedupe: Literal["none", "consecutive", "all"] = "none"
    user_core: int = 0
    item_core: int = 0
    split: Literal["leave_one_out", "temporal"] = "leave_one_out"
    temporal_valid_fraction: float = 0.1
    temporal_test_fraction: float = 0.1
    source: dict[str, Any] = field(default_factory=dict)


def conform(raw: pl.DataFrame) -> pl.DataFrame:
    """Add missing optional columns and cast to the raw schema.

    Without ``row`` the input order is the frame's order; without ``timestamp`` the input order is the time order.
    """
    for name in ("user", "item"):
        if name not in raw.columns:
            raise DataError(f"raw interactions have no {name!r} column")
    if "row" not in raw.columns:
        raw = raw.with_row_index("row")
    if "timestamp" not in raw.columns:
        raw = raw.with_columns(pl.col("row").alias("timestamp"))
    for name, dtype in RAW_SCHEMA.items():
        if name not in raw.columns:
            raw = raw.with_columns(pl.lit(None, dtype).alias(name))
    return raw.select([pl.col(n).cast(t) for n, t in RAW_SCHEMA.items()])


def implicit(raw: pl.DataFrame, min_rating: float | None) -> pl.DataFrame:
    """Keep rows whose rating reaches the threshold (rows without a rating are kept)."""
    if min_rating is None:
        return raw
    return raw.filter(pl.col("rating").is_null() | (pl.col("rating") >= min_rating))


def time_order(raw: pl.DataFrame) -> pl.DataFrame:
    """Rows by time; equal timestamps keep their input order."""
    return raw.sort(["timestamp", "row"], maintain_order=True)


def dedupe(raw: pl.DataFrame, how: str) -> pl.DataFrame:
    """Drop repeated (user, item) rows: none, only immediate repeats, or all but the first. Expects time order."""
    if how == "none":
        return raw
    if how == "all":
        return raw.unique(subset=["user", "item"], keep="first", maintain_order=True)
    if how == "consecutive":
        prev = pl.col("item").shift(1).over("user")
        return raw.filter(prev.is_null() | (prev != pl.col("item")))
    raise DataError(f"dedupe must be none, consecutive or all, got {how!r}")


def k_core(raw: pl.DataFrame, user_core: int, item_core: int, max_rounds: int = 100) -> pl.DataFrame:
    """Iteratively drop users with fewer than ``user_core`` and items with fewer than ``item_core`` interactions."""
    if user_core <= 1 and item_core <= 1:
        return raw
    for _ in range(max_rounds):
        before = raw.height
        if item_core > 1:
            raw = raw.filter(pl.len().over("item") >= item_core)
        if user_core > 1:
            raw = raw.filter(pl.len().over("user") >= user_core)
        if raw.height == before:
            break
    return raw


def build_dataset(
    raw: pl.DataFrame, items_meta: pl.DataFrame | None = None, options: PrepareOptions | None = None
) -> Dataset:
    """Run every transform and the split; returns the in-memory data set (call ``save`` to write it)."""
    options = options or PrepareOptions()
    steps: dict[str, int] = {"input_rows": raw.height}
    raw = conform(raw)
    raw = implicit(raw, options.min_rating)
    steps["after_implicit"] = raw.height
    raw = time_order(raw)
    raw = dedupe(raw, options.dedupe)
    steps["after_dedupe"] = raw.height
    raw = k_core(raw, options.user_core, options.item_core)
    steps["after_k_core"] = raw.height
    if raw.height == 0:
        raise DataError("no interactions left after filtering (check min_rating and the k-core settings)")

    # Id maps in order of first appearance in the input: deterministic and independent of string sorting.
    by_input = raw.sort("row")
    user_ids = IdMap.from_ids(by_input.get_column("user").unique(maintain_order=True).to_list())
    item_ids = IdMap.from_ids(by_input.get_column("item").unique(maintain_order=True).to_list())
    umap = pl.DataFrame({"user": user_ids.ids[1:], "u": np.arange(1, len(user_ids) + 1, dtype=np.int32)})
    imap = pl.DataFrame({"item": item_ids.ids[1:], "i": np.arange(1, len(item_ids) + 1, dtype=np.int32)})
    table = raw.join(umap, on="user", how="left").join(imap, on="item", how="left").sort(["u", "timestamp", "row"])
    user = table.get_column("u").to_numpy().astype(np.int32)
    timestamp = table.get_column("timestamp").to_numpy().astype(np.int64)
    weight = table.get_column("weight").fill_null(1.0).to_numpy().astype(np.float32)
    if options.split == "leave_one_out":
        split = leave_one_out(user)
    else:
        split = temporal_split(timestamp, options.temporal_valid_fraction, options.temporal_test_fraction)
    catalog = attach_metadata(item_ids, items_meta)
    return Dataset(
        user=user,
        item=table.get_column("i").to_numpy().astype(np.int32),
        timestamp=timestamp,
        weight=weight,
        split=split,
        items=catalog,
        users=user_ids,
        manifest={
            "source": options.source,
            "steps": steps,
            "split_method": options.split,
            "options": {
                "min_rating": options.min_rating,
                "dedupe": options.dedupe,
                "user_core": options.user_core,
                "item_core": options.item_core,
            },
        },
    )


def attach_metadata(item_ids: IdMap, meta: pl.DataFrame | None) -> ItemCatalog:
    """Align item metadata (``item``, ``title``, ``categories``, numeric columns) with the item index."""
    if meta is None or meta.height == 0:
        return ItemCatalog(ids=item_ids)
    meta = meta.unique(subset=["item"], keep="first", maintain_order=True)
    order = pl.DataFrame({"item": item_ids.ids[1:]}).join(meta, on="item", how="left", maintain_order="left")
    titles = ["", *order.get_column("title").to_list()] if "title" in order.columns else None
    categories = None
    if "categories" in order.columns:
        categories = [
            [],
            *[list(c) if c is not None else [] for c in order.get_column("categories").to_list()],
        ]
    numeric = {}
    for name in order.columns:
        if name in ("item", "title", "categories") or not order.schema[name].is_numeric():
            continue
        col = order.get_column(name).cast(pl.Float32)
        fill = col.median()
        values = col.fill_null(fill if fill is not None else 0.0).to_numpy().astype(np.float32)
        numeric[name] = np.concatenate([[0.0], values]).astype(np.float32)
    return ItemCatalog(ids=item_ids, titles=titles, categories=categories, numeric=numeric)
