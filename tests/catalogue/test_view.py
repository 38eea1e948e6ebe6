"""The per-process view: what it makes of the records for one model, and how it keeps up with a store that
changes under it, goes away or is replaced (a small fake store, a fake clock)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from recengine.catalogue.records import CatalogueItem
from recengine.catalogue.store import CatalogueVersion, Changes, WriteResult
from recengine.catalogue.view import CatalogueView
from recengine.data.dataset import Dataset
from recengine.engines.popularity import Popularity
from recengine.errors import StorageUnavailable
from recengine.serving.registry import LoadedModel
from tests.engines.neural.category_led import category_led

pytestmark = pytest.mark.anyio


class FakeStore:
    """Records in a dict, a version counter, and a switch that makes every call fail like an outage."""

    backend = "fake"

    def __init__(self, epoch: str = "e1") -> None:
        self.epoch = epoch
        self.items: dict[str, CatalogueItem] = {}
        self.counter = 0
        self.down = False
        self.version_calls = 0

    def _check(self) -> None:
        if self.down:
            raise StorageUnavailable("fake store down")

    async def put(self, items: Sequence[CatalogueItem]) -> WriteResult:
        self._check()
        self.counter += 1
        created = [i.item_id not in self.items for i in items]
        for i in items:
            self.items[i.item_id] = i.with_version(self.counter)
        return WriteResult(self.counter, created)

    async def get(self, item_id: str) -> CatalogueItem | None:
        self._check()
        return self.items.get(item_id)

    async def mark_unavailable(self, item_id: str, fallback: CatalogueItem | None = None) -> CatalogueItem | None:
        self._check()
        current = self.items.get(item_id) or fallback
        if current is None:
            return None
        self.counter += 1
        self.items[item_id] = current.with_version(self.counter, available=False)
        return self.items[item_id]

    async def version(self) -> CatalogueVersion:
        self.version_calls += 1
        self._check()
        return CatalogueVersion(self.epoch, self.counter)

    async def changes(self, after: int = 0) -> Changes:
        self._check()
        items = sorted((i for i in self.items.values() if i.version > after), key=lambda i: i.version)
        return Changes(self.epoch, self.counter, items)

    async def close(self) -> None:
        return None


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def model(ds: Dataset) -> LoadedModel:
    return LoadedModel(name="popularity", engine=Popularity.fit(ds), path=Path("<memory>"))


async def test_the_overlay_of_one_model(small_dataset: Dataset) -> None:
    ds = small_dataset
    store, served = FakeStore(), model(ds)
    view = CatalogueView(store)
    view.attach(served)
    assert served.blocked is None and served.catalogue is not None and served.catalogue.unscored == 0
    cats = ds.items.categories
    assert cats is not None
    old = cats[4][0]
    await store.put(
        [
            CatalogueItem(ds.items.ids.ids[3], available=False),
            CatalogueItem(ds.items.ids.ids[4], title="Moved", categories=("moved",)),
            CatalogueItem("brand-new", categories=(old,)),
            CatalogueItem("brand-new-retired", available=False),
        ]
    )
    await view.sync()
    overlay = served.catalogue
    assert overlay is not None and overlay.version == 1
    assert served.blocked is not None and served.blocked.tolist() == [3]
    assert overlay.unscored == 1  # brand-new: popularity cannot score it; the retired one is nothing to score
    assert served.items_in_categories(["moved"]).tolist() == [4]
    # A record is the whole item: item 3's record has no categories, item 4's moved; brand-new is not this model's.
    expected = sorted(i for i, cs in enumerate(cats) if old in cs and i not in (3, 4))
    assert served.items_in_categories([old]).tolist() == expected
    assert overlay.records[4].title == "Moved"
    # The arrays handed to every request cannot be changed by one.
    with pytest.raises(ValueError):
        served.blocked[0] = 1


async def test_the_neural_engine_places_new_items_and_only_available_ones(small_dataset: Dataset) -> None:
    ds = small_dataset
    engine = category_led(ds)
    served = LoadedModel(name="neural", engine=engine, path=Path("<memory>"))
    store = FakeStore()
    view = CatalogueView(store)
    view.attach(served)
    n = engine.n_items
    await store.put(
        [
            CatalogueItem("new-a", title="A", categories=("fresh",), attributes={"price": 3}),
            CatalogueItem("new-b", available=False),
        ]
    )
    await view.sync()
    assert engine.n_items == n + 1 and engine.item_ids.index("new-a") == n + 1 and "new-b" not in engine.item_ids
    assert served.items_in_categories(["fresh"]).tolist() == [n + 1]
    assert served.catalogue is not None and served.catalogue.unscored == 0
    await store.put([CatalogueItem("new-b")])  # available now: placed on the next sync
    await view.sync()
    assert engine.item_ids.index("new-b") == n + 2
    # A model loaded later (a restart, a reload) gets both before it serves.
    fresh = view.loading(lambda path: category_led(ds))(Path("ignored"))
    assert fresh.item_ids.index("new-a") and fresh.item_ids.index("new-b")
    ids, _ = fresh.recommend([np.asarray([1, 2])], k=fresh.n_items)
    assert {n + 1, n + 2} <= set(ids[0].tolist())


async def test_a_store_that_goes_away_leaves_the_view_as_it_was_and_is_retried(small_dataset: Dataset) -> None:
    store, clock, served = FakeStore(), Clock(), model(small_dataset)
    view = CatalogueView(store, retry_after_s=2.0, clock=clock)
    view.attach(served)
    await store.put([CatalogueItem(small_dataset.items.ids.ids[1], available=False)])
    await view.sync()
    assert view.version == 1 and served.blocked is not None
    store.down = True
    await view.sync()  # no exception: requests go on being served
    assert view.version == 1 and served.blocked is not None and view.last_error is not None
    calls = store.version_calls
    await view.sync()
    assert store.version_calls == calls  # not asked again before retry_after_s
    clock.now += 2.5
    store.down = False
    await store.put([CatalogueItem(small_dataset.items.ids.ids[1])])
    await view.sync()
    assert view.version == 2 and served.blocked is None and view.last_error is None


async def test_check_interval_and_a_replaced_store(small_dataset: Dataset) -> None:
    store, clock = FakeStore(), Clock()
    view = CatalogueView(store, check_interval_s=1.0, clock=clock)
    await view.sync()
    await store.put([CatalogueItem("a")])
    await store.put([CatalogueItem("a", title="again")])
    await view.sync()
    assert view.version == 0  # within the interval: not asked
    clock.now += 1.0
    await view.sync()
    assert view.version == 2 and set(view.records) == {"a"}
    # A store whose version went back is another store (a new Redis): read whole, nothing of the old one kept.
    replaced = FakeStore("e2")
    await replaced.put([CatalogueItem("b")])
    view.store = replaced
    clock.now += 1.0
    await view.sync()
    assert view.version == 1 and set(view.records) == {"b"} and view.key == "e2.1"
    # Another catalogue whose count agrees: told apart by its epoch alone.
    again = FakeStore("e3")
    await again.put([CatalogueItem("c")])
    view.store = again
    clock.now += 1.0
    await view.sync()
    assert view.version == 1 and set(view.records) == {"c"} and view.key == "e3.1"
