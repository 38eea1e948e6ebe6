"""One contract, every Cache implementation (memory, Redis, and the fail-over in front of Redis)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
from redis.asyncio import Redis

from recengine.serving.cache import Cache, FailoverCache, MemoryCache, RedisCache, cache_key, params_hash
from recengine.serving.redis import RedisHealth, redis_client

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["memory", "redis", "failover"])
async def cache(request: pytest.FixtureRequest) -> AsyncIterator[Cache]:
    if request.param == "memory":
        impl: Cache = MemoryCache(max_entries=1000)
    else:
        url = request.getfixturevalue("redis_url")
        client = redis_client(url, 500)
        impl = RedisCache(client)
        if request.param == "failover":
            impl = FailoverCache(impl, MemoryCache(), RedisHealth(1.0))
    yield impl
    await impl.close()


def key() -> str:
    return f"test:{uuid.uuid4().hex}"


async def test_miss_then_hit(cache: Cache) -> None:
    k = key()
    assert await cache.get(k) is None
    await cache.set(k, b"answer", 30)
    assert await cache.get(k) == b"answer"


async def test_overwrite_and_delete(cache: Cache) -> None:
    k = key()
    await cache.set(k, b"a", 30)
    await cache.set(k, b"b", 30)
    assert await cache.get(k) == b"b"
    await cache.delete(k)
    assert await cache.get(k) is None


async def test_entries_expire(cache: Cache) -> None:
    k = key()
    await cache.set(k, b"short", 0.05)
    assert await cache.get(k) == b"short"
    await asyncio.sleep(0.12)
    assert await cache.get(k) is None


async def test_zero_ttl_stores_nothing(cache: Cache) -> None:
    k = key()
    await cache.set(k, b"x", 0)
    assert await cache.get(k) is None


async def test_memory_cache_evicts_least_recently_used() -> None:
    c = MemoryCache(max_entries=2)
    await c.set("a", b"1", 60)
    await c.set("b", b"2", 60)
    assert await c.get("a") == b"1"  # a is now the most recent
    await c.set("c", b"3", 60)
    assert await c.get("b") is None
    assert await c.get("a") == b"1" and await c.get("c") == b"3"
    assert len(c) == 2


def test_every_component_changes_the_key() -> None:
    base: tuple[str | int, ...] = ("rec", "ease", "v1", "user", "h1", params_hash({"k": 10}), 3)
    keys = {cache_key(*base)}  # type: ignore[arg-type]
    for i, other in enumerate(("sim", "neural", "v2", "user2", "h2", params_hash({"k": 11}), 4)):
        parts = list(base)
        parts[i] = other
        keys.add(cache_key(*parts))  # type: ignore[arg-type]
    assert len(keys) == 8  # the catalogue version too: an item retired since is never served from the cache
    assert params_hash({"a": 1, "b": 2}) == params_hash({"b": 2, "a": 1})


def test_odd_user_ids_make_well_formed_keys() -> None:
    k = cache_key("rec", "ease", "v1", "user with spaces\n:and:colons" * 50, "h", "p")
    assert " " not in k and "\n" not in k and len(k) < 200


class _Dead:
    """A Redis stand-in whose every call fails like an unreachable server."""

    async def get(self, key: str) -> bytes | None:
        raise ConnectionError("down")

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        raise ConnectionError("down")

    async def delete(self, key: str) -> None:
        raise ConnectionError("down")

    async def close(self) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_failover_serves_from_memory_and_waits_before_retrying() -> None:
    clock = Clock()
    health = RedisHealth(retry_after_s=2.0, clock=clock)
    changes: list[bool] = []
    health.on_change(changes.append)
    dead = _Dead()
    c = FailoverCache(dead, MemoryCache(), health)
    assert c.backend == "redis"
    await c.set("k", b"v", 60)
    assert health.degraded and c.backend == "memory"
    assert await c.get("k") == b"v"
    assert not health.should_try()
    clock.now = 2.0
    assert health.should_try()
    assert changes == [False]


async def test_failover_returns_to_redis_by_itself(redis_url: str) -> None:
    clock = Clock()
    health = RedisHealth(retry_after_s=1.0, clock=clock)
    memory = MemoryCache()
    real = RedisCache(redis_client(redis_url, 500))
    switch: dict[str, Cache] = {"impl": _Dead()}

    class Switchable:
        async def get(self, key: str) -> bytes | None:
            return await switch["impl"].get(key)

        async def set(self, key: str, value: bytes, ttl_s: float) -> None:
            await switch["impl"].set(key, value, ttl_s)

        async def delete(self, key: str) -> None:
            await switch["impl"].delete(key)

        async def close(self) -> None:
            await real.close()

    c = FailoverCache(Switchable(), memory, health)
    k = key()
    await c.set(k, b"during outage", 60)
    assert health.degraded
    switch["impl"] = real  # Redis is back
    clock.now = 1.0
    await c.set(k, b"after recovery", 60)
    assert not health.degraded and c.backend == "redis"
    direct: Redis = real.client
    assert await direct.get(k) == b"after recovery"
    await c.close()


def test_cache_implementations_follow_the_protocol() -> None:
    ok: list[Callable[[], object]] = [
        lambda: MemoryCache(),
        lambda: FailoverCache(_Dead(), MemoryCache(), RedisHealth()),
    ]
    for make in ok:
        assert isinstance(make(), Cache)


async def test_failover_reports_every_lookup_redis_did_not_answer() -> None:
    clock = Clock()
    health = RedisHealth(retry_after_s=2.0, clock=clock)
    errors: list[str] = []
    c = FailoverCache(_Dead(), MemoryCache(), health, on_redis_error=lambda: errors.append("lookup"))
    assert await c.get("k") is None  # Redis tried and failed
    await c.set("k", b"v", 60)  # a write is not a lookup
    assert await c.get("k") == b"v"  # Redis marked down, not asked: memory answers, and that is still an error
    assert errors == ["lookup", "lookup"]


async def test_failover_reports_no_error_while_redis_answers() -> None:
    errors: list[str] = []
    c = FailoverCache(MemoryCache(), MemoryCache(), RedisHealth(), on_redis_error=lambda: errors.append("lookup"))
    await c.set("k", b"v", 60)
    assert await c.get("k") == b"v" and await c.get("other") is None
    assert errors == []
