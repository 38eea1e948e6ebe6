"""A neural engine whose item vectors are led by their categories, for the tests of category filters on the ANN path.

engine = category_led(dataset, ann_threshold=10, ann_kind="ivf")   # untrained, served through IVF
items_by_category(dataset)                                           # {category: item indices}
"""

from __future__ import annotations

import numpy as np
import torch

from recengine.data.dataset import TRAIN, Dataset
from recengine.engines.neural.engine import NeuralEngine
from recengine.engines.neural.features import FeatureVocab
from recengine.engines.neural.model import TwoTower, TwoTowerConfig


def category_led(ds: Dataset, **kwargs: object) -> NeuralEngine:
    """An untrained engine whose item vectors are led by their categories, as trained ones are: a category's items
    gather in part of IVF's lists, so the 16 lists probed near a user of other categories hold few or none of them
    (the ids' and titles' embeddings are shrunk, the categories' grown)."""
    vocab = FeatureVocab.fit(ds.items, 64)
    cfg = TwoTowerConfig(
        n_id_items=ds.n_items,
        n_categories=vocab.n_categories,
        title_buckets=vocab.title_buckets,
        n_numeric=len(vocab.numeric),
        d_model=16,
        max_len=20,
        temperature=0.05,
        dropout=0.1,  # untrained and served in eval mode: dropout never applies
    )
    torch.manual_seed(0)
    model = TwoTower(cfg)
    with torch.no_grad():
        tower = model.item_tower
        tower.id_emb.weight.mul_(0.1)
        tower.title_emb.weight.mul_(0.1)
        tower.cat_emb.weight.mul_(3.0)
    has_id = torch.from_numpy(ds.item_counts(max_split=TRAIN) > 0)
    return NeuralEngine(model=model, vocab=vocab, has_id=has_id, items=ds.items, **kwargs)  # type: ignore[arg-type]


def items_by_category(ds: Dataset) -> dict[str, np.ndarray]:
    """Each category's item indices (sorted), an item under each of its categories."""
    out: dict[str, list[int]] = {}
    for i, cats in enumerate(ds.items.categories or []):
        for c in cats or ():
            out.setdefault(c, []).append(i)
    return {c: np.asarray(v, dtype=np.int64) for c, v in sorted(out.items())}
