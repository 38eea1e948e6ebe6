"""What runs in an engine's pool: external ids in, one engine call per batch, formatted items out.

The request's filters become per-row exclusions and allow-lists here: excluded items and categories are left out,
``include_categories`` is the allow-list of the items in them (never an exclusion list of the rest of the
catalogue, which an ANN search would have to over-fetch). Excluding the history itself is the engine's
(``Engine.recommend(..., exclude_history=…)``), so "exclude seen items" is decided in one place.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from recengine.errors import NoHistory
from recengine.serving.registry import LoadedModel
from recengine.serving.types import RecommendRequest

#: One request of a batch: the history (external ids, oldest first), how many items, the request.
Row = tuple[Sequence[str], int, RecommendRequest]


def recommend_rows(model: LoadedModel, rows: Sequence[Row]) -> list[list[dict[str, Any]] | BaseException]:
    """One engine call for many requests (per ``exclude_seen`` value); a row that cannot be answered gets its
    exception."""
    engine = model.engine
    ids = engine.item_ids
    out: list[list[dict[str, Any]] | BaseException] = [NoHistory("unanswered")] * len(rows)
    histories: dict[int, np.ndarray] = {}
    for i, (items, _, _) in enumerate(rows):
        hist = ids.encode(items)
        hist = hist[hist > 0]
        if engine.needs_history and hist.size == 0:
            out[i] = NoHistory(f"{model.name} needs at least one known item")
            continue
        histories[i] = hist
    for seen in (True, False):
        todo = [i for i in histories if rows[i][2].exclude_seen is seen]
        if not todo:
            continue
        k_max = min(max(rows[i][1] for i in todo), engine.n_items)
        allow = [allowed_in(model, rows[i][2]) for i in todo]
        idx, scores = engine.recommend(
            [histories[i] for i in todo],
            k=k_max,
            exclude=[filtered_out(model, rows[i][2]) for i in todo],
            exclude_history=seen,
            allow=allow if any(a is not None for a in allow) else None,
        )
        for row, i in enumerate(todo):
            out[i] = format_items(model, idx[row], scores[row], rows[i][1])
    return out


def allowed_in(model: LoadedModel, req: RecommendRequest) -> np.ndarray | None:
    """The item indices ``include_categories`` allows (sorted; empty when no item carries them), None without it."""
    return model.items_in_categories(req.include_categories) if req.include_categories else None


def filtered_out(model: LoadedModel, req: RecommendRequest) -> np.ndarray:
    """Item indices the request's filters leave out: items named, items of excluded categories, and every item
    the catalogue marked unavailable."""
    parts: list[np.ndarray] = []
    blocked = model.blocked
    if blocked is not None:
        parts.append(blocked)
    if req.exclude_items:
        parts.append(model.engine.item_ids.encode(req.exclude_items))
    if req.exclude_categories:
        parts.append(model.items_in_categories(req.exclude_categories))
    if not parts:
        return np.zeros(0, dtype=np.int64)
    out = np.concatenate(parts)
    return out[out > 0]


def similar_row(model: LoadedModel, index: int, k: int) -> list[dict[str, Any]]:
    """The items most similar to item ``index``, the item itself left out."""
    blocked = model.blocked
    # similar_items takes no exclusions: ask for enough more that the unavailable items can be dropped after.
    extra = 0 if blocked is None else blocked.size
    idx, scores = model.engine.similar_items(np.asarray([index], dtype=np.int64), k=min(k + extra, model.n_items))
    keep = np.asarray(idx[0]) != index
    if blocked is not None:
        keep &= ~np.isin(np.asarray(idx[0]), blocked)
    return format_items(model, np.asarray(idx[0])[keep], np.asarray(scores[0])[keep], k)


def format_items(model: LoadedModel, idx: np.ndarray, scores: np.ndarray, k: int) -> list[dict[str, Any]]:
    """``[{item_id, score, rank, title?, categories?}, …]``: at most ``k``, padding dropped; titles and categories
    as the catalogue has them now."""
    catalog = model.engine.items
    ids = catalog.ids.ids
    titles, cats = catalog.titles, catalog.categories
    records = model.catalogue.records if model.catalogue is not None else {}
    out: list[dict[str, Any]] = []
    for i, s in zip(idx.tolist(), scores.tolist(), strict=True):
        if i <= 0 or not np.isfinite(s):
            continue  # padding: fewer candidates than k were left after filtering
        entry: dict[str, Any] = {"item_id": ids[i], "score": round(float(s), 6), "rank": len(out) + 1}
        record = records.get(i)
        if record is not None:
            if record.title:
                entry["title"] = record.title
            if record.categories:
                entry["categories"] = list(record.categories)
        else:
            if titles is not None and i < len(titles) and titles[i]:
                entry["title"] = titles[i]
            if cats is not None and i < len(cats) and cats[i]:
                entry["categories"] = list(cats[i])
        out.append(entry)
        if len(out) == k:
            break
    return out
