"""One contract, both catalogue stores (SQLite and a real Redis): versions, replace, retire, changes, sharing,
restart — and the export the retrain step reads."""

from __future__ import annotations

from pathlib import Path

import pytest

from recengine.catalogue.export import export_catalogue
from recengine.catalogue.records import CatalogueItem
from recengine.catalogue.store import CatalogueStore
from recengine.data.dataset import Dataset
from recengine.errors import ConfigError
from tests.catalogue.conftest import OpenStore

pytestmark = pytest.mark.anyio


def item(item_id: str, **fields: object) -> CatalogueItem:
    return CatalogueItem(item_id=item_id, **fields)  # type: ignore[arg-type]


async def test_an_empty_catalogue(store: CatalogueStore) -> None:
    assert (await store.version()).number == 0
    assert await store.get("nope") is None
    changes = await store.changes(0)
    assert changes.version == 0 and changes.items == []
    assert (await store.put([])).version == 0  # nothing written, no new version


async def test_put_stores_the_whole_record_and_replaces_it(store: CatalogueStore) -> None:
    first = item(
        "sku-1",
        title="Grüne Tasse ☕",
        categories=("kitchen", "mugs"),
        attributes={"price": 0.1 + 0.2, "tiny": 1e-300, "count": 2**53, "colour": "green", "gift": True, "x": None},
        updated_at=1_700_000_000.25,
    )
    result = await store.put([first])
    assert result.version == 1 and result.created == [True]
    got = await store.get("sku-1")
    assert got == first.with_version(1)  # every field as written, floats to the last bit
    assert (await store.version()).number == 1
    # PUT replaces: the fields left out are gone, not merged.
    result = await store.put([item("sku-1", title="Blue mug")])
    assert result.version == 2 and result.created == [False]
    got = await store.get("sku-1")
    assert got is not None and got.title == "Blue mug" and got.categories == () and got.attributes == {}


async def test_a_batch_is_one_version_and_changes_return_only_later_writes(store: CatalogueStore) -> None:
    await store.put([item("a"), item("b")])
    result = await store.put([item("c"), item("a", title="again"), item("d", available=False)])
    assert result.version == 2 and result.created == [True, False, True]
    changes = await store.changes(1)
    assert changes.version == 2
    assert [(i.item_id, i.version, i.available) for i in changes.items] == [
        ("a", 2, True), ("c", 2, True), ("d", 2, False)
    ]  # fmt: skip
    assert [i.item_id for i in (await store.changes(0)).items] == ["b", "a", "c", "d"]  # oldest write first
    assert (await store.changes(2)).items == []


async def test_mark_unavailable(store: CatalogueStore) -> None:
    await store.put([item("a", title="A", categories=("x",))])
    gone = await store.mark_unavailable("a")
    assert gone is not None and not gone.available and gone.version == 2 and gone.title == "A"
    assert await store.get("a") == gone
    # Already unavailable: nothing changes, no new version (replicas need not re-apply anything).
    again = await store.mark_unavailable("a")
    assert again == gone and (await store.version()).number == 2
    # Unknown, without a fallback: nothing stored.
    assert await store.mark_unavailable("ghost") is None and (await store.version()).number == 2
    # Unknown, with its training metadata as the fallback: stored unavailable.
    base = item("trained", title="T", categories=("y",), attributes={"price": 3.5})
    stored = await store.mark_unavailable("trained", base)
    assert stored == base.with_version(3, available=False)
    assert await store.get("trained") == stored
    # A PUT with available (the default) brings an item back.
    await store.put([item("a", title="A")])
    back = await store.get("a")
    assert back is not None and back.available and back.version == 4


async def test_replicas_share_one_catalogue_and_it_survives_a_restart(
    open_store: tuple[OpenStore, str], store: CatalogueStore
) -> None:
    other = await open_store[0]()  # another replica on the same file / Redis
    await store.put([item("a", title="from the first")])
    assert (await other.version()).number == 1
    assert (await other.changes(0)).items[0].title == "from the first"
    await other.mark_unavailable("a")
    assert (await store.version()).number == 2
    got = await store.get("a")
    assert got is not None and not got.available
    epoch = (await store.version()).epoch
    assert epoch and (await other.version()).epoch == epoch  # one catalogue
    await store.close()
    await other.close()
    restarted = await open_store[0]()
    assert (await restarted.version()).epoch == epoch  # the same catalogue after a restart
    assert (await restarted.version()).number == 2
    got = await restarted.get("a")
    assert got is not None and got.title == "from the first" and not got.available


async def test_export_is_the_items_table_of_the_next_data_set(
    open_store: tuple[OpenStore, str], store: CatalogueStore, small_dataset: Dataset
) -> None:
    from recengine.data.transforms import attach_metadata

    known = small_dataset.items.ids.ids[1]
    retired = small_dataset.items.ids.ids[2]
    await store.put(
        [
            item("new-1", title="Fresh thing", categories=("fresh",), attributes={"price": 12.5, "colour": "red"}),
            item(known, title="Renamed", categories=("moved",), attributes={"price": 1.0, "gift": True}),
        ]
    )
    await store.mark_unavailable(retired, item(retired, title="old"))
    export = export_catalogue(open_store[1], base=small_dataset)
    assert export.version == 2 and export.n_records == 3
    frame = export.items
    assert frame.columns == ["item", "title", "categories", "price"]  # text and boolean attributes are no features
    assert frame.height == small_dataset.n_items + 1 and frame["item"].n_unique() == frame.height
    rows = {r["item"]: r for r in frame.to_dicts()}
    assert rows["new-1"] == {"item": "new-1", "title": "Fresh thing", "categories": ["fresh"], "price": 12.5}
    assert rows[known]["title"] == "Renamed" and rows[known]["categories"] == ["moved"]
    untouched = small_dataset.items.ids.ids[3]
    assert rows[untouched]["title"] == small_dataset.items.titles[3]  # type: ignore[index]
    assert export.unavailable == [retired]
    # The table is what the data pipeline takes: aligned to an id map, new items and all.
    ids = small_dataset.items.ids
    from recengine.data.dataset import IdMap

    grown = IdMap([*ids.ids, "new-1"])
    catalog = attach_metadata(grown, frame)
    assert catalog.titles is not None and catalog.titles[-1] == "Fresh thing"
    assert catalog.categories is not None and catalog.categories[ids.index(known)] == ["moved"]
    assert float(catalog.numeric["price"][-1]) == 12.5
    # Without a base: the records alone.
    alone = export_catalogue(open_store[1])
    assert sorted(alone.items["item"].to_list()) == sorted(["new-1", known, retired])


async def test_the_settings_name_the_catalogue_the_export_reads(tmp_path: Path) -> None:
    from recengine.catalogue import open_store, source_of
    from recengine.settings import load_settings

    settings = load_settings(None, serving={"artifacts_dir": str(tmp_path / "art")})
    assert source_of(settings) == str(tmp_path / "art" / "catalogue.sqlite3")
    store = open_store(settings)
    await store.put([item("a", attributes={"price": 2.0})])
    await store.close()
    assert export_catalogue(source_of(settings)).items["item"].to_list() == ["a"]
    redis = load_settings(None, cache={"redis_url": "redis://r:6379/1"}, catalogue={"redis_prefix": "p"})
    assert source_of(redis) == "redis://r:6379/1?prefix=p"
    with pytest.raises(ConfigError, match=r"needs cache\.redis_url"):
        open_store(load_settings(None, catalogue={"backend": "redis"}))


async def test_another_catalogue_has_another_epoch(open_store: tuple[OpenStore, str], tmp_path: Path) -> None:
    """Two catalogues whose counts agree are still told apart (a replaced file, a new prefix)."""
    from recengine.catalogue.redis_store import RedisCatalogueStore
    from recengine.catalogue.sqlite_store import SqliteCatalogueStore

    first = await open_store[0]()
    await first.put([item("a")])
    if isinstance(first, SqliteCatalogueStore):
        second: CatalogueStore = SqliteCatalogueStore(tmp_path / "another.sqlite3")
    else:
        assert isinstance(first, RedisCatalogueStore)
        second = RedisCatalogueStore(first.client, first.prefix + ":another", owns_client=False)
    await second.put([item("a")])
    one, two = await first.version(), await second.version()
    assert one.number == two.number == 1 and one.epoch != two.epoch
    assert (await second.changes(0)).epoch == two.epoch
    if isinstance(second, RedisCatalogueStore):
        from recengine.catalogue.redis_store import catalogue_keys

        await second.client.delete(*catalogue_keys(second.prefix))
    await second.close()
