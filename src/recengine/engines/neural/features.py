"""Item metadata → item-tower inputs, with the vocabularies that make the encoding repeatable after a reload.

The vocabularies (category list, title hashing buckets, numeric normalisation statistics) are fitted once on the
training catalogue and stored in the artifact's config.json, so ``add_items`` encodes a new item exactly as training
encoded the old ones. Title tokens are hashed with CRC-32, not Python's ``hash`` (randomised per process).
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import polars as pl
import torch

from recengine.data.dataset import IdMap, ItemCatalog
from recengine.engines.neural.model import ItemInputs
from recengine.errors import DataError

_TOKEN = re.compile(r"[^\W_]+", re.UNICODE)
MAX_CATEGORIES = 16
MAX_TITLE_TOKENS = 16


def title_tokens(title: str | None, buckets: int) -> list[int]:
    """Hashed token ids in 1..buckets (0 is padding), first occurrence order, at most MAX_TITLE_TOKENS."""
    if not title:
        return []
    out: list[int] = []
    for tok in _TOKEN.findall(title.lower()):
        h = zlib.crc32(tok.encode("utf-8")) % buckets + 1
        if h not in out:
            out.append(h)
        if len(out) == MAX_TITLE_TOKENS:
            break
    return out


@dataclass(frozen=True)
class NumericStat:
    name: str
    log: bool  # log1p before standardising: prices and counts are skewed and non-negative
    mean: float
    std: float

    def apply(self, values: np.ndarray) -> np.ndarray:
        x = np.asarray(values, dtype=np.float64)
        if self.log:
            x = np.log1p(np.clip(x, 0.0, None))
        return ((x - self.mean) / self.std).astype(np.float32)


@dataclass
class FeatureVocab:
    categories: list[str]
    title_buckets: int
    numeric: list[NumericStat] = field(default_factory=list)
    max_categories: int = 1

    @property
    def n_categories(self) -> int:
        return len(self.categories)

    @property
    def numeric_names(self) -> list[str]:
        return [s.name for s in self.numeric]

    @classmethod
    def fit(cls, catalog: ItemCatalog, title_buckets: int) -> FeatureVocab:
        stats = []
        for name in sorted(catalog.numeric):
            x = np.asarray(catalog.numeric[name][1:], dtype=np.float64)
            log = bool(x.size and x.min() >= 0 and x.max() > 10 * max(np.median(x), 1e-9))
            log = log or bool(x.size and x.min() >= 0 and x.max() > 100)
            t = np.log1p(x) if log else x
            std = float(t.std()) if t.size else 1.0
            stats.append(NumericStat(name, log, float(t.mean()) if t.size else 0.0, std if std > 1e-9 else 1.0))
        cats = catalog.categories or []
        longest = max((len(c) for c in cats), default=0)
        return cls(
            categories=catalog.category_vocab(),
            title_buckets=title_buckets,
            numeric=stats,
            max_categories=max(1, min(MAX_CATEGORIES, longest)),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "categories": self.categories,
            "title_buckets": self.title_buckets,
            "numeric": [asdict(s) for s in self.numeric],
            "max_categories": self.max_categories,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureVocab:
        return cls(
            categories=list(data["categories"]),
            title_buckets=int(data["title_buckets"]),
            numeric=[NumericStat(**s) for s in data.get("numeric", [])],
            max_categories=int(data.get("max_categories", 1)),
        )

    # ---- encoding ----------------------------------------------------------------------------------------------
    def encode(
        self,
        titles: Sequence[str | None],
        categories: Sequence[Sequence[str]],
        numeric: dict[str, np.ndarray],
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(categories (n, C), title (n, T), numeric (n, K)) for n items; unknown categories are ignored."""
        n = len(titles)
        cat_index = {c: i + 1 for i, c in enumerate(self.categories)}
        cat = torch.zeros((n, self.max_categories), dtype=torch.long)
        tit = torch.zeros((n, MAX_TITLE_TOKENS), dtype=torch.long)
        for row in range(n):
            ids = [cat_index[c] for c in categories[row] if c in cat_index][: self.max_categories]
            if ids:
                cat[row, : len(ids)] = torch.tensor(ids)
            toks = title_tokens(titles[row], self.title_buckets)
            if toks:
                tit[row, : len(toks)] = torch.tensor(toks)
        num = torch.zeros((n, len(self.numeric)), dtype=torch.float32)
        for j, stat in enumerate(self.numeric):
            num[:, j] = torch.from_numpy(stat.apply(numeric[stat.name]))
        return cat, tit, num

    def encode_catalog(self, catalog: ItemCatalog, has_id: torch.Tensor) -> ItemInputs:
        """Inputs for every index 0..n_items of ``catalog`` (row 0 is padding and stays empty)."""
        n = catalog.n_items + 1
        titles = catalog.titles if catalog.titles is not None else [None] * n
        cats = catalog.categories if catalog.categories is not None else [[] for _ in range(n)]
        numeric = {}
        for stat in self.numeric:
            col = catalog.numeric.get(stat.name)
            if col is None:
                raise DataError(f"item catalogue has no numeric column {stat.name!r}, which the model was trained on")
            numeric[stat.name] = col
        cat, tit, num = self.encode(titles, cats, numeric)
        cat[0], tit[0], num[0] = 0, 0, 0.0
        ids = torch.where(has_id, torch.arange(n), torch.zeros(n, dtype=torch.long))
        return ItemInputs(ids=ids, categories=cat, title=tit, numeric=num)


@dataclass
class NewItems:
    """Validated metadata of items to add: aligned lists, one entry per row."""

    ids: list[str]
    titles: list[str | None]
    categories: list[list[str]]
    numeric: dict[str, np.ndarray]


def parse_new_items(metadata: pl.DataFrame, known: IdMap, vocab: FeatureVocab) -> NewItems:
    """Check new-item metadata and return it as aligned lists.

    Expects a polars DataFrame with ``item`` (the external id, a non-empty string not in the catalogue),
    optional ``title`` (string or null), optional ``categories`` (list of strings or null) and the numeric columns
    the model was trained on (numbers; null or missing means the training mean). Every problem names its row.
    """
    if not isinstance(metadata, pl.DataFrame):
        raise DataError(f"add_items expects a polars DataFrame, got {type(metadata).__name__}")
    if "item" not in metadata.columns:
        raise DataError(f"item metadata has no 'item' column (columns: {', '.join(metadata.columns) or 'none'})")
    rows = metadata.to_dicts()
    seen: set[str] = set()
    ids: list[str] = []
    titles: list[str | None] = []
    cats: list[list[str]] = []
    numeric = {s.name: np.zeros(len(rows), dtype=np.float32) for s in vocab.numeric}
    for r, row in enumerate(rows):
        where = f"item metadata row {r}"
        item = row.get("item")
        if item is None or (isinstance(item, str) and not item.strip()):
            raise DataError(f"{where}: 'item' is missing; every new item needs an external id")
        if not isinstance(item, str | int) or isinstance(item, bool):
            raise DataError(f"{where}: 'item' must be a string id, got {type(item).__name__} {item!r}")
        item = str(item)
        where = f"item metadata row {r} (item {item!r})"
        if item in known:
            raise DataError(f"{where}: the item is already in the catalogue")
        if item in seen:
            raise DataError(f"{where}: the item appears twice in this batch")
        seen.add(item)
        title = row.get("title")
        if title is not None and not isinstance(title, str):
            raise DataError(f"{where}: 'title' must be a string or null, got {type(title).__name__} {title!r}")
        raw_cats = row.get("categories")
        if raw_cats is None:
            raw_cats = []
        if not isinstance(raw_cats, list) or not all(isinstance(c, str) for c in raw_cats):
            raise DataError(f"{where}: 'categories' must be a list of strings or null, got {raw_cats!r}")
        for stat in vocab.numeric:
            value = row.get(stat.name)
            if value is None:
                mean = math.expm1(stat.mean) if stat.log else stat.mean
                numeric[stat.name][r] = mean
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise DataError(f"{where}: {stat.name!r} must be a finite number or null, got {value!r}")
            numeric[stat.name][r] = float(value)
        ids.append(item)
        titles.append(title)
        cats.append(list(raw_cats))
    return NewItems(ids=ids, titles=titles, categories=cats, numeric=numeric)
