"""Growing a data set's vocabulary: new users and items appended after the known ones, whose indices never move.

    users = grow_ids(dataset.users, ["u-new", ...])         # the old map's ids, then the unseen ones in order
    items = grow_catalog(dataset.items, ["i-new", ...])     # the same for items; metadata rows padded
    merged = with_items(dataset, meta)                      # an items table (``read_items``) merged in

Keeping every old index where it was means a model trained on the old data set still names the same items in the
new one: its item ids are a prefix of the new vocabulary, so it can be scored on the new split (the retraining
gate does just that) without translating anything but the new items, which it cannot know.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

import numpy as np
import polars as pl

from recengine.data.dataset import Dataset, IdMap, ItemCatalog, compute_hash
from recengine.data.transforms import attach_metadata


def unseen(ids: IdMap, externals: Iterable[str]) -> list[str]:
    """The ids of ``externals`` that ``ids`` does not know, once each, in order of first appearance."""
    out: dict[str, None] = {}
    for e in externals:
        e = str(e)
        if e not in ids and e not in out:
            out[e] = None
    return list(out)


def grow_ids(ids: IdMap, externals: Iterable[str]) -> IdMap:
    """``ids`` followed by the ids of ``externals`` it does not know (the same map when there are none)."""
    new = unseen(ids, externals)
    return IdMap([*ids.ids, *new]) if new else ids


def grow_catalog(catalog: ItemCatalog, externals: Iterable[str]) -> ItemCatalog:
    """``catalog`` with the unknown ids of ``externals`` appended: no title, no category, the median of each
    numeric column (the fill ``data prepare`` uses for an item without a value)."""
    new = unseen(catalog.ids, externals)
    if not new:
        return catalog
    k = len(new)
    numeric = {}
    for name, values in catalog.numeric.items():
        fill = float(np.median(values[1:])) if values.size > 1 else 0.0
        numeric[name] = np.concatenate([values, np.full(k, fill, dtype=np.float32)]).astype(np.float32)
    return ItemCatalog(
        ids=IdMap([*catalog.ids.ids, *new]),
        titles=None if catalog.titles is None else [*catalog.titles, *([None] * k)],
        categories=None if catalog.categories is None else [*catalog.categories, *([[]] * k)],
        numeric=numeric,
    )


def catalog_table(catalog: ItemCatalog) -> pl.DataFrame:
    """The catalogue as an items table (``item``, ``title``, ``categories``, numeric columns), padding left out."""
    cols: dict[str, pl.Series] = {"item": pl.Series("item", catalog.ids.ids[1:], pl.String)}
    if catalog.titles is not None:
        cols["title"] = pl.Series("title", catalog.titles[1:], pl.String)
    if catalog.categories is not None:
        cols["categories"] = pl.Series("categories", catalog.categories[1:], pl.List(pl.String))
    for name, values in catalog.numeric.items():
        cols[name] = pl.Series(name, values[1:], pl.Float32)
    return pl.DataFrame(cols)


def with_items(dataset: Dataset, meta: pl.DataFrame) -> Dataset:
    """The data set with an items table merged into its catalogue: unknown items appended (with no interactions
    yet), known ones taking the table's title, categories and numeric values where it has them."""
    if meta.height == 0:
        return dataset
    ids = grow_ids(dataset.items.ids, meta.get_column("item").cast(pl.String).to_list())
    old = catalog_table(dataset.items)
    fresh = meta.unique(subset=["item"], keep="last", maintain_order=True).with_columns(pl.col("item").cast(pl.String))
    # The table wins column by column; columns only the old catalogue has keep their values.
    kept = old.join(fresh.select("item"), on="item", how="anti")
    old_only = old.select(["item", *[c for c in old.columns if c not in fresh.columns]])
    updated = fresh.join(old_only, on="item", how="left", maintain_order="left")
    table = pl.concat([kept, updated], how="diagonal_relaxed")
    catalog = attach_metadata(ids, table)
    merged = replace(dataset, items=catalog, manifest={**dataset.manifest}, path=None)
    merged.manifest["content_hash"] = compute_hash(merged)
    return merged
