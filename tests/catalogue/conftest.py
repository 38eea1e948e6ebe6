"""Catalogue stores for the contract suite: the same tests run against SQLite and a real Redis."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from recengine.catalogue.redis_store import RedisCatalogueStore, catalogue_keys
from recengine.catalogue.sqlite_store import SqliteCatalogueStore
from recengine.catalogue.store import CatalogueStore
from recengine.serving.redis import redis_client

#: Opens one more store on the same backing data (another replica, or the same one after a restart).
OpenStore = Callable[[], Awaitable[CatalogueStore]]


@pytest.fixture(params=["sqlite", "redis"])
async def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[OpenStore, str]]:
    """``(open, source)``: ``open()`` gives a new store over one backing catalogue, ``source`` is its spec for
    ``export_catalogue``. Every store opened is closed at the end."""
    opened: list[CatalogueStore] = []
    if request.param == "sqlite":
        path = tmp_path / "catalogue.sqlite3"

        async def open_sqlite() -> CatalogueStore:
            opened.append(SqliteCatalogueStore(path))
            return opened[-1]

        opener, source = open_sqlite, str(path)
    else:
        url = request.getfixturevalue("redis_url")
        prefix = f"test:catalogue:{uuid.uuid4().hex}"

        async def open_redis() -> CatalogueStore:
            opened.append(RedisCatalogueStore(redis_client(url, 2000), prefix))
            return opened[-1]

        opener, source = open_redis, f"{url}{'&' if '?' in url else '?'}prefix={prefix}"
    yield opener, source
    for store in opened:
        await store.close()
    if request.param == "redis":
        client = redis_client(request.getfixturevalue("redis_url"), 2000)
        await client.delete(*catalogue_keys(prefix))
        await client.aclose()


@pytest.fixture
async def store(open_store: tuple[OpenStore, str]) -> CatalogueStore:
    return await open_store[0]()
