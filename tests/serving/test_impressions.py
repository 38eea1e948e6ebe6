"""One contract, every ImpressionStore (memory, SQLite, Redis): add, look up, next-event ranks, attributions once per
event, scans per experiment, retention."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import redis

from recengine.errors import StorageUnavailable
from recengine.serving.impressions import (
    Attribution,
    Impression,
    ImpressionStore,
    MemoryImpressionStore,
    RedisImpressionStore,
    SqliteImpressionStore,
)
from recengine.serving.redis import redis_client

pytestmark = pytest.mark.anyio

OpenStore = Callable[..., ImpressionStore]


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[OpenStore]:
    """Opens the backend's store — the same file or key prefix each time, as a restarted server would."""
    prefix = f"test:imp:{uuid.uuid4().hex}"
    opened: list[ImpressionStore] = []
    clients = []
    memory = MemoryImpressionStore()

    def open_(retain_s: float = 86_400.0) -> ImpressionStore:
        store: ImpressionStore
        if request.param == "memory":
            memory.retain_s = retain_s
            store = memory
        elif request.param == "sqlite":
            store = SqliteImpressionStore(tmp_path / "impressions.sqlite3", retain_s)
        else:
            client = redis_client(request.getfixturevalue("redis_url"), 1000)
            clients.append(client)
            store = RedisImpressionStore(client, prefix=prefix, retain_s=retain_s)
        opened.append(store)
        return store

    yield open_
    for store in opened:
        await store.close()
    for client in clients:
        await client.aclose()
    if request.param == "redis":
        cleanup = redis.Redis.from_url(request.getfixturevalue("redis_url"))
        keys = cleanup.keys(prefix + "*")
        if keys:
            cleanup.delete(*keys)
        cleanup.close()


@pytest.fixture
def store(open_store: OpenStore) -> ImpressionStore:
    return open_store()


NOW = time.time()


def imp(rid: str, user: str | None = "u1", ts: float = 0.0, items: tuple[str, ...] = ("a", "b", "c"), **kw: object):
    return Impression(rid, user, kw.pop("engine", "ease"), "v1", items, NOW + ts, **kw)  # type: ignore[arg-type]


def att(event: str, rid: str, exp: str | None = "x", arm: str | None = "ease", ts: float = 0.0) -> Attribution:
    return Attribution(event, rid, "u1", "a", 1, "ease", "id", NOW + ts, exp, arm)


async def test_an_impression_round_trips(store: ImpressionStore) -> None:
    one = imp("r1", experiment="x", arm="interleave", credits=("ease", "pop", "ease"), engine="interleave")
    await store.add([one])
    assert await store.get("r1") == one
    assert await store.get("nope") is None
    assert one.rank_of("b") == 2 and one.rank_of("z") is None and one.credit_of(2) == "pop"


async def test_adding_an_id_twice_keeps_the_first(store: ImpressionStore) -> None:
    await store.add([imp("r1", items=("a",))])
    await store.add([imp("r1", items=("b",))])
    found = await store.get("r1")
    assert found is not None and found.items == ("a",)


async def test_recent_lists_a_users_impressions_since_a_time_oldest_first(store: ImpressionStore) -> None:
    await store.add([imp("late", ts=-10), imp("early", ts=-100), imp("other", user="u2", ts=-5), imp("anon", None)])
    assert [i.recommendation_id for i in await store.recent("u1", NOW - 1000)] == ["early", "late"]
    assert [i.recommendation_id for i in await store.recent("u1", NOW - 50)] == ["late"]
    assert await store.recent("nobody", NOW - 1000) == []


async def test_the_next_event_rank_is_set_once(store: ImpressionStore) -> None:
    await store.add([imp("r1")])
    assert await store.set_next("r1", 2) is True
    assert await store.set_next("r1", 0) is False
    found = await store.get("r1")
    assert found is not None and found.next_rank == 2
    assert await store.set_next("missing", 1) is False
    assert (await store.recent("u1", NOW - 10))[0].next_rank == 2


async def test_an_event_is_attributed_once(store: ImpressionStore) -> None:
    await store.add([imp("r1", experiment="x", arm="ease")])
    assert await store.attribute([att("e1", "r1"), att("e2", "r1")]) == [True, True]
    assert await store.attribute([att("e1", "r1"), att("e3", "r1")]) == [False, True]
    assert await store.attribute([]) == []
    _, attrs = await store.scan("x")
    assert [a.event_id for a in attrs] == ["e1", "e2", "e3"]
    assert attrs[0] == att("e1", "r1")


async def test_scan_returns_one_experiments_rows_only(store: ImpressionStore) -> None:
    await store.add([imp("x1", experiment="x", arm="ease", ts=-2), imp("x2", experiment="x", arm="pop", ts=-1)])
    await store.add([imp("y1", experiment="y", arm="ease"), imp("none1")])
    await store.attribute([att("e1", "x1"), att("e2", "y1", exp="y"), att("e3", "none1", exp=None, arm=None)])
    imps, attrs = await store.scan("x")
    assert [i.recommendation_id for i in imps] == ["x1", "x2"] and [a.event_id for a in attrs] == ["e1"]
    imps, attrs = await store.scan(None)
    assert [i.recommendation_id for i in imps] == ["none1"] and [a.event_id for a in attrs] == ["e3"]
    assert await store.experiments() == ["x", "y"]


async def test_retention_drops_old_rows_and_keeps_young_ones(open_store: OpenStore) -> None:
    store = open_store(retain_s=3600.0)
    await store.add(
        [imp("old", ts=-7200, experiment="x", arm="ease"), imp("young", ts=-60, experiment="x", arm="ease")]
    )
    await store.attribute([att("e-old", "old", ts=-7100), att("e-young", "young", ts=-30)])
    await store.trim()
    imps, attrs = await store.scan("x")
    assert [i.recommendation_id for i in imps] == ["young"]
    assert [a.event_id for a in attrs] == ["e-young"]
    assert [i.recommendation_id for i in await store.recent("u1", 0.0)] == ["young"]


async def test_rows_survive_reopening(open_store: OpenStore, request: pytest.FixtureRequest) -> None:
    first = open_store()
    await first.add([imp("r1", experiment="x", arm="ease")])
    await first.attribute([att("e1", "r1")])
    await first.set_next("r1", 1)
    await first.close()
    again = open_store()
    found = await again.get("r1")
    assert found is not None and found.next_rank == 1
    assert [a.event_id for a in (await again.scan("x"))[1]] == ["e1"]


async def test_a_closed_sqlite_store_says_it_is_unavailable(tmp_path: Path) -> None:
    store = SqliteImpressionStore(tmp_path / "i.sqlite3")
    await store.close()
    with pytest.raises(StorageUnavailable):
        await store.add([imp("r1")])


async def test_redis_down_is_storage_unavailable() -> None:
    client = redis_client("redis://127.0.0.1:1/0", 100)  # nothing listens on port 1
    store = RedisImpressionStore(client, prefix="test:down")
    with pytest.raises(StorageUnavailable):
        await store.add([imp("r1")])
    with pytest.raises(StorageUnavailable):
        await store.recent("u1", 0.0)
    await client.aclose()
