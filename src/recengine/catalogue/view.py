"""One process's view of the catalogue: a mirror of the store's records, kept current, applied to every model.

    view = CatalogueView(store)
    await view.start()                          # the lifespan: every record, before the models load
    registry = ModelRegistry(root, loader=view.loading(load_engine))   # new items placed before a model serves
    registry.on_swap(view.attach)
    await view.sync()                           # before each request: one version check, a fetch when it moved

How replicas learn of a change: each compares its version with the store's before every request (``sync``), and
fetches the records written since when they differ. The check is one ``GET`` on Redis, or a ``PRAGMA
data_version`` on the shared SQLite file (microseconds), so a write on one replica counts on every other from
its next request on — an unavailable item is never recommended again anywhere — with no extra moving part. The
event stream was the alternative: it exists only with Redis, and a replica that missed a message would stay wrong
until restarted; a version counter cannot be missed. ``catalogue.check_interval_ms`` trades that immediacy for
fewer checks.

Applying a change to a model: the neural engine embeds every available item it does not know from its metadata
(``NeuralEngine.add_items``), and every model gets a new :class:`ModelOverlay` — the unavailable items it must
leave out, the category lists new and changed items moved, the records whose titles answers show.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import polars as pl

from recengine.catalogue.overlay import ModelOverlay, frozen
from recengine.catalogue.records import CatalogueItem, shortest_float
from recengine.catalogue.store import CatalogueStore, Changes
from recengine.engines.base import Engine
from recengine.engines.neural.engine import NeuralEngine
from recengine.errors import RecengineError, StorageUnavailable
from recengine.serving.registry import LoadedModel

log = logging.getLogger("recengine.catalogue")


def numeric_features(engine: Engine) -> list[str]:
    """The numeric item features an engine reads from metadata (the neural engine's ``price`` and the like)."""
    return list(engine.vocab.numeric_names) if isinstance(engine, NeuralEngine) else []


def places_new_items(engine: Engine) -> bool:
    """Whether the engine can score an item it was not trained on, from its metadata alone."""
    return isinstance(engine, NeuralEngine)


class CatalogueView:
    def __init__(
        self,
        store: CatalogueStore,
        *,
        check_interval_s: float = 0.0,
        retry_after_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.check_interval_s = check_interval_s
        self.retry_after_s = retry_after_s
        self._clock = clock
        self.records: dict[str, CatalogueItem] = {}
        self.version = 0
        """The catalogue version this process has caught up to."""
        self.epoch = ""
        """The epoch of the catalogue it has (see ``CatalogueVersion``): another epoch is another catalogue."""
        self.last_error: str | None = None
        self._models: dict[str, LoadedModel] = {}
        self._lock = threading.Lock()  # applying changes and attaching models: event loop and reload threads
        self._sync_lock: asyncio.Lock | None = None
        self._next_check = 0.0
        self._down_until = 0.0

    @property
    def key(self) -> str:
        """Epoch and version: the part of every cache key that a catalogue change (or another catalogue) changes."""
        return f"{self.epoch}.{self.version}"

    # ---- keeping up with the store ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Read every record (at start-up). A store that cannot answer now is retried by the next sync."""
        await self.sync(force=True)

    async def sync(self, force: bool = False) -> None:
        """Catch up with the store when its version moved. A store that does not answer leaves the view as it is
        (and is not asked again for ``retry_after_s``): requests keep being served with what this process has."""
        now = self._clock()
        if not force:
            if now < self._next_check or now < self._down_until:
                return
            self._next_check = now + self.check_interval_s
        try:
            epoch, number = await self.store.version()
            if (epoch, number) == (self.epoch, self.version) and not force:
                return
            if self._sync_lock is None:
                self._sync_lock = asyncio.Lock()
            async with self._sync_lock:
                if (epoch, number) == (self.epoch, self.version) and not force:
                    return  # another request caught up meanwhile
                # Another epoch, or a count that went back: another catalogue (a new file, a new Redis). Read it whole.
                reset = epoch != self.epoch or number < self.version
                changes = await self.store.changes(0 if reset else self.version)
                if not reset and changes.epoch != self.epoch:  # replaced between the two reads
                    reset = True
                    changes = await self.store.changes(0)
                if changes.items or changes.version != self.version or reset:
                    await asyncio.to_thread(self.apply, changes, reset)
        except StorageUnavailable as exc:
            if self.last_error is None:
                log.warning("catalogue store unavailable; serving with catalogue version %d: %s", self.version, exc)
            self.last_error = str(exc)
            self._down_until = now + self.retry_after_s
            return
        self.last_error = None

    def apply(self, changes: Changes, reset: bool = False) -> None:
        """Take the changed records and re-apply the catalogue to every attached model."""
        with self._lock:
            records = {} if reset else dict(self.records)
            for item in changes.items:
                records[item.item_id] = item
            self.records = records
            version = max(changes.version, max((i.version for i in changes.items), default=0))
            for model in list(self._models.values()):
                self._attach_locked(model, version)
            # Last: a request that reads this version finds every model updated.
            self.epoch, self.version = changes.epoch, version

    # ---- models -------------------------------------------------------------------------------------------
    def loading(self, loader: Callable[[Path], Engine]) -> Callable[[Path], Engine]:
        """``loader`` with the catalogue's new items placed in the engine before it is smoke-tested and served."""

        def load(path: Path) -> Engine:
            engine = loader(path)
            with self._lock:
                self._place_new(engine)
            return engine

        return load

    def attach(self, model: LoadedModel) -> None:
        """Apply the catalogue to a model that starts serving (a registry swap listener)."""
        with self._lock:
            self._attach_locked(model, self.version)

    def _attach_locked(self, model: LoadedModel, version: int) -> None:
        if self._place_new(model.engine):
            model.refresh_categories()
        model.catalogue = overlay_for(model, self.records.values(), version)
        self._models[model.name] = model

    def _place_new(self, engine: Engine) -> int:
        """Embed the available records the engine does not know (neural engine only); how many it placed."""
        if not isinstance(engine, NeuralEngine):
            return 0
        known = engine.item_ids
        new = sorted(
            (r for r in self.records.values() if r.available and r.item_id not in known),
            key=lambda r: (r.version, r.item_id),
        )
        if not new:
            return 0
        names = engine.vocab.numeric_names
        frame = pl.DataFrame(
            {
                "item": [r.item_id for r in new],
                "title": [r.title for r in new],
                "categories": [list(r.categories) for r in new],
                **{name: [r.numeric(name) for r in new] for name in names},
            },
            schema={
                "item": pl.String,
                "title": pl.String,
                "categories": pl.List(pl.String),
                **{name: pl.Float64 for name in names},
            },
        )
        try:
            return len(engine.add_items(frame))
        except RecengineError as exc:  # the routes validate; a record another release wrote may still not fit
            log.error("the neural engine cannot place new catalogue items: %s", exc)
            return 0

    # ---- reading ------------------------------------------------------------------------------------------
    def models(self) -> list[LoadedModel]:
        return list(self._models.values())

    def sizes(self) -> tuple[int, int]:
        """(records, available records)."""
        records = self.records
        return len(records), sum(1 for r in records.values() if r.available)

    def lookup(self, item_id: str) -> tuple[CatalogueItem, str] | None:
        """The item as the catalogue has it — its record, else its metadata in a served model's training data —
        and where it came from (``catalogue`` or ``model``); None when neither knows it."""
        record = self.records.get(item_id)
        if record is not None:
            return record, "catalogue"
        for model in self._by_size():
            index = model.engine.item_ids.index(item_id)
            if index:
                return model_item(model.engine, index), "model"
        return None

    def search(
        self, query: str | None, category: str | None, limit: int, available: bool | None = None
    ) -> list[tuple[CatalogueItem, str]]:
        """Items whose id or title contains ``query`` (case-insensitive) and that carry ``category``: catalogue
        records first (newest write first), then the served models' items in catalogue order."""
        needle = query.casefold() if query else None
        out: list[tuple[CatalogueItem, str]] = []
        if limit <= 0:
            return out

        def matches(item_id: str, title: str | None, categories: Iterable[str], is_available: bool) -> bool:
            if available is not None and is_available is not available:
                return False
            if category is not None and category not in categories:
                return False
            return needle is None or needle in item_id.casefold() or (title is not None and needle in title.casefold())

        records = self.records
        for record in sorted(records.values(), key=lambda r: (-r.version, r.item_id)):
            if matches(record.item_id, record.title, record.categories, record.available):
                out.append((record, "catalogue"))
                if len(out) == limit:
                    return out
        seen = set(records)
        for model in self._by_size():
            for index, item_id, title, cats in _rows(model.engine):
                if item_id in seen:
                    continue
                seen.add(item_id)
                if matches(item_id, title, cats, True):
                    out.append((model_item(model.engine, index), "model"))
                    if len(out) == limit:
                        return out
        return out

    def numeric_features(self) -> list[str]:
        """The numeric features the served models read from item attributes (must be numbers when given)."""
        return sorted({name for model in self._models.values() for name in numeric_features(model.engine)})

    def _by_size(self) -> list[LoadedModel]:
        return sorted(self._models.values(), key=lambda m: -m.n_items)


def _rows(engine: Engine) -> Iterator[tuple[int, str, str | None, list[str]]]:
    items = engine.items
    titles, cats = items.titles, items.categories
    for index, item_id in enumerate(items.ids.ids):
        if index == 0:
            continue
        yield (
            index,
            item_id,
            titles[index] if titles is not None and index < len(titles) else None,
            cats[index] if cats is not None and index < len(cats) else [],
        )


def model_item(engine: Engine, index: int) -> CatalogueItem:
    """An item a model was trained on (never written to the catalogue), as a record of version 0."""
    items = engine.items
    title = items.titles[index] if items.titles is not None and index < len(items.titles) else None
    cats = items.categories[index] if items.categories is not None and index < len(items.categories) else []
    attributes: dict[str, str | int | float | bool | None] = {
        name: shortest_float(col[index]) for name, col in items.numeric.items() if index < len(col)
    }
    return CatalogueItem(
        item_id=items.ids.ids[index], title=title or None, categories=tuple(cats), attributes=attributes
    )


def overlay_for(model: LoadedModel, records: Iterable[CatalogueItem], version: int) -> ModelOverlay:
    """The catalogue's changes to one model, in its index space."""
    engine = model.engine
    ids = engine.item_ids
    cats = engine.items.categories
    blocked: list[int] = []
    by_index: dict[int, CatalogueItem] = {}
    added: dict[str, list[int]] = {}
    removed: dict[str, list[int]] = {}
    unscored = 0
    for record in records:
        index = ids.index(record.item_id)
        if index == 0:
            unscored += record.available
            continue
        by_index[index] = record
        if not record.available:
            blocked.append(index)
        base = set(cats[index]) if cats is not None and index < len(cats) else set()
        new = set(record.categories)
        for c in new - base:
            added.setdefault(c, []).append(index)
        for c in base - new:
            removed.setdefault(c, []).append(index)
    categories: dict[str, np.ndarray] = {}
    if added or removed:
        index_of = model.base_category_index()
        empty = np.zeros(0, dtype=np.int64)
        for c in set(added) | set(removed):
            rows = index_of.get(c, empty)
            if c in removed:
                rows = np.setdiff1d(rows, np.asarray(removed[c], dtype=np.int64))
            if c in added:
                rows = np.union1d(rows, np.asarray(added[c], dtype=np.int64))
            categories[c] = frozen(np.asarray(rows, dtype=np.int64))
    return ModelOverlay(
        version=version,
        blocked=frozen(np.asarray(sorted(blocked), dtype=np.int64)),
        categories=categories,
        records=by_index,
        unscored=unscored,
    )
