"""Fakes shared by the serving and API tests (fakes, not mocks: they implement the real protocol).

Imported as a package, ``from tests.fakes import FakeEngine, catalog``; nothing in tests/ edits ``sys.path``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recengine.data.dataset import Dataset, IdMap, ItemCatalog
from recengine.engines.base import Engine


def catalog(n: int = 20) -> ItemCatalog:
    """Items i1..in; item i is in category "odd" or "even" and titled "Item i"."""
    ids = IdMap.from_ids(f"i{j}" for j in range(1, n + 1))
    titles: list[str | None] = ["", *(f"Item {j}" for j in range(1, n + 1))]
    cats = [[], *(["odd" if j % 2 else "even"] for j in range(1, n + 1))]
    return ItemCatalog(ids=ids, titles=titles, categories=cats)


class FakeEngine(Engine):
    """Prefers low item indices (score = -index); ``mode`` switches its behaviour at run time.

    mode "ok" answers, "raise" raises RuntimeError, "sleep" sleeps ``delay_s`` before answering.
    """

    name = "fake"

    def __init__(
        self,
        name: str,
        items: ItemCatalog | None = None,
        version: str = "v1",
        needs_history: bool = False,
        mode: str = "ok",
        delay_s: float = 0.5,
    ) -> None:
        super().__init__(items=items or catalog(), config={"version": version})
        self.name = name  # type: ignore[misc]
        self.needs_history = needs_history  # type: ignore[misc]
        self.mode = mode
        self.delay_s = delay_s
        self.calls = 0

    @classmethod
    def fit(cls, dataset: Dataset, config: Any, **kwargs: Any) -> FakeEngine:
        raise NotImplementedError

    def score(self, histories: Sequence[np.ndarray]) -> torch.Tensor:
        self.calls += 1
        if self.mode == "raise":
            raise RuntimeError("fake engine failure")
        if self.mode == "sleep":
            time.sleep(self.delay_s)
        row = -torch.arange(self.n_items + 1, dtype=torch.float32)
        return row.unsqueeze(0).repeat(len(histories), 1)

    def save(self, path: Path) -> Path:
        raise NotImplementedError

    @classmethod
    def load(cls, path: Path) -> FakeEngine:
        raise NotImplementedError
