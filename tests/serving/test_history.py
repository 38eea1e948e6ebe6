"""One contract, every HistoryStore (memory, Redis, fail-over); seeding from a processed data set."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import numpy as np
import pytest

from recengine.data.dataset import Dataset
from recengine.serving.history import (
    FailoverHistoryStore,
    HistoryStore,
    MemoryHistoryStore,
    RedisHistoryStore,
    SeedHistories,
)
from recengine.serving.redis import RedisHealth, redis_client

pytestmark = pytest.mark.anyio


@pytest.fixture
def seeded() -> str:
    """A user with a seeded history, unique per test: the Redis server is shared with other tests and runs."""
    return f"seeded-{uuid.uuid4().hex}"


@pytest.fixture(params=["memory", "redis", "failover"])
async def store(request: pytest.FixtureRequest, seeded: str) -> AsyncIterator[HistoryStore]:
    seed = SeedHistories({seeded: np.array([1, 2, 3])}, ["", "a", "b", "c"], "tag")
    if request.param == "memory":
        impl: HistoryStore = MemoryHistoryStore(max_len=5, seed=seed)
    else:
        client = redis_client(request.getfixturevalue("redis_url"), 500)
        impl = RedisHistoryStore(client, max_len=5, seed=seed)
        if request.param == "failover":
            impl = FailoverHistoryStore(impl, MemoryHistoryStore(5, seed), RedisHealth(1.0))
    yield impl
    await impl.close()


def user() -> str:
    return f"user-{uuid.uuid4().hex}"


async def test_unknown_user_has_an_empty_history(store: HistoryStore) -> None:
    h = await store.get(user())
    assert h.items == []


async def test_append_keeps_order_and_changes_the_version(store: HistoryStore) -> None:
    u = user()
    v0 = (await store.get(u)).version
    await store.append(u, ["x", "y"])
    h1 = await store.get(u)
    await store.append(u, ["z"])
    h2 = await store.get(u)
    assert h1.items == ["x", "y"] and h2.items == ["x", "y", "z"]
    assert len({v0, h1.version, h2.version}) == 3


async def test_history_is_capped_at_max_len_keeping_the_newest(store: HistoryStore) -> None:
    u = user()
    await store.append(u, [f"i{j}" for j in range(8)])
    assert (await store.get(u)).items == ["i3", "i4", "i5", "i6", "i7"]


async def test_seed_comes_first_then_live_items(store: HistoryStore, seeded: str) -> None:
    assert (await store.get(seeded)).items == ["a", "b", "c"]
    await store.append(seeded, ["d", "e", "f"])
    assert (await store.get(seeded)).items == ["b", "c", "d", "e", "f"]


async def test_size_counts_users_with_a_live_history_once(store: HistoryStore, seeded: str) -> None:
    before = await store.size()  # the Redis server is shared: count what this test adds
    await store.get(seeded)  # a seed alone is not a live history
    first, second = user(), user()
    await store.append(first, ["a"])
    await store.append(first, ["b", "c"])
    await store.append(second, ["a"])
    await store.append(user(), [])
    assert await store.size() == before + 2


async def test_empty_append_is_a_no_op(store: HistoryStore) -> None:
    u = user()
    before = await store.get(u)
    await store.append(u, [])
    assert await store.get(u) == before


def test_seed_from_a_dataset_holds_every_split(small_dataset: Dataset) -> None:
    seed = SeedHistories.from_dataset(small_dataset)
    uid = small_dataset.users.ids[1]
    full = small_dataset.sequences(max_split=2)[1]
    assert seed.get(uid, 10_000) == small_dataset.items.ids.decode(full)
    assert seed.get(uid, 2) == small_dataset.items.ids.decode(full[-2:])
    assert len(seed) == small_dataset.n_users
    assert seed.tag == small_dataset.content_hash[:8]


class _Flaky:
    """Redis-like store that can be switched off and on."""

    def __init__(self) -> None:
        self.inner = MemoryHistoryStore(5)
        self.max_len = 5
        self.up = True

    async def get(self, user_id: str):  # type: ignore[no-untyped-def]
        if not self.up:
            raise ConnectionError("down")
        return await self.inner.get(user_id)

    async def append(self, user_id: str, item_ids: list[str]) -> None:
        if not self.up:
            raise ConnectionError("down")
        await self.inner.append(user_id, item_ids)

    async def close(self) -> None:
        pass


async def test_failover_keeps_appends_made_during_an_outage_and_replays_them() -> None:
    primary = _Flaky()
    health = RedisHealth(retry_after_s=0.0)
    store = FailoverHistoryStore(primary, MemoryHistoryStore(5), health)
    await store.append("u", ["a"])
    primary.up = False
    await store.append("u", ["b"])  # lands in memory, queued for Redis
    assert health.degraded
    assert (await store.get("u")).items == ["b"]
    primary.up = True
    assert (await store.get("u")).items == ["a", "b"]  # replayed on recovery
    assert not health.degraded


async def test_concurrent_requests_after_recovery_replay_each_append_once() -> None:
    class _Slow(_Flaky):
        async def append(self, user_id: str, item_ids: list[str]) -> None:
            await asyncio.sleep(0.001)  # a Redis round trip: other requests run meanwhile
            await super().append(user_id, item_ids)

    primary = _Slow()
    primary.inner, primary.max_len = MemoryHistoryStore(50), 50
    store = FailoverHistoryStore(primary, MemoryHistoryStore(50), RedisHealth(retry_after_s=0.0))
    primary.up = False
    for i in range(20):
        await store.append("u", [f"i{i}"])
    primary.up = True
    histories = await asyncio.gather(*(store.get("u") for _ in range(10)))
    expected = [f"i{i}" for i in range(20)]
    assert all(h.items == expected for h in histories)


class _SplittingProxy:
    """A Redis client as seen through a proxy that forwards a plain pipeline's commands one at a time (as
    twemproxy or a cluster client may): other clients' commands can land between them. A MULTI/EXEC transaction
    stays one unit, as every proxy must keep it. ``between`` runs after the first command of a plain pipeline."""

    def __init__(self, client: object, between: object) -> None:
        self.client = client
        self.between = between

    def pipeline(self, transaction: bool = True) -> object:
        proxy = self

        class Pipe:
            def __init__(self) -> None:
                self.calls: list[tuple[str, tuple[object, ...]]] = []

            def __getattr__(self, name: str) -> object:
                return lambda *args: self.calls.append((name, args))

            async def execute(self) -> list[object]:
                if transaction:
                    pipe = proxy.client.pipeline(transaction=True)  # type: ignore[attr-defined]
                    for name, args in self.calls:
                        getattr(pipe, name)(*args)
                    result = list(await pipe.execute())
                    await proxy.between()  # type: ignore[operator]  # the other client's turn: before or after
                    return result
                out = []
                for i, (name, args) in enumerate(self.calls):
                    out.append(await getattr(proxy.client, name)(*args))
                    if i == 0:
                        await proxy.between()  # type: ignore[operator]
                return out

        return Pipe()

    async def aclose(self) -> None:
        await self.client.aclose()  # type: ignore[attr-defined]


@pytest.mark.redis
async def test_a_concurrent_append_never_pairs_an_old_history_with_a_new_version(redis_url: str) -> None:
    # Two workers share one Redis. Worker B appends while worker A reads: A must never see the new version with
    # the old items, or it would cache an answer built from the old history under the new version for ttl_s.
    u = user()
    worker_b = RedisHistoryStore(redis_client(redis_url, 500), max_len=5)
    await worker_b.append(u, ["first"])

    async def b_appends() -> None:
        await worker_b.append(u, ["second"])

    worker_a = RedisHistoryStore(_SplittingProxy(redis_client(redis_url, 500), b_appends), max_len=5)  # type: ignore[arg-type]
    seen = await worker_a.get(u)
    after = await worker_b.get(u)
    assert after.items == ["first", "second"]
    assert seen.version != after.version or seen.items == after.items
    await worker_a.close()
    await worker_b.close()
