"""What the catalogue changes about one served model, in the model's own index space.

Built by :class:`~recengine.catalogue.view.CatalogueView` whenever the catalogue or the model changes, and read by
every request without a lock (it is replaced whole, never modified): the items that must not be recommended, the
category lists that new and changed items moved, and the records to show titles and categories from.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from recengine.catalogue.records import CatalogueItem

_EMPTY = np.zeros(0, dtype=np.int64)
_EMPTY.setflags(write=False)


@dataclass(frozen=True)
class ModelOverlay:
    version: int = 0
    """The catalogue version this overlay reflects."""
    blocked: np.ndarray = field(default_factory=lambda: _EMPTY)
    """Sorted indices of the unavailable items this model knows: excluded from every answer."""
    categories: dict[str, np.ndarray] = field(default_factory=dict)
    """Category → sorted item indices, for the categories a catalogue record changed (others: the model's own)."""
    records: dict[int, CatalogueItem] = field(default_factory=dict)
    """Index → record, for the items of this model the catalogue holds."""
    unscored: int = 0
    """Available catalogue items this model does not know, so cannot recommend until it is retrained."""


def frozen(rows: np.ndarray) -> np.ndarray:
    rows.setflags(write=False)
    return rows
