"""The answer cache: a small protocol, an in-process LRU+TTL, a Redis one, and the fail-over that joins them.

Keys are built by :func:`cache_key` from everything an answer depends on — engine, model version, the catalogue
version, the user's history version and a hash of the request parameters — so a model reload, a catalogue change
(an item added or marked unavailable) or a new event changes the key and a stale answer can never be served; old
entries simply expire.

    Cache (protocol)
    ├── MemoryCache      the embedded default; one per process
    ├── RedisCache       shared by every worker and replica (redis.asyncio)
    └── FailoverCache    Redis first; while Redis is unreachable, memory — and back to Redis by itself
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from functools import partial
from typing import Any, Protocol, runtime_checkable

import orjson
from redis.asyncio import Redis

from recengine.serving.redis import RedisHealth, nothing

#: Bump the number whenever the cached value's format changes: replicas of two releases then never read each
#: other's entries during a rolling upgrade.
KEY_PREFIX = "recengine:rec:3:"


@runtime_checkable
class Cache(Protocol):
    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl_s: float) -> None: ...

    async def delete(self, key: str) -> None: ...

    async def close(self) -> None: ...


def params_hash(params: dict[str, Any]) -> str:
    """Stable short hash of request parameters (key order does not matter)."""
    raw = orjson.dumps(params, option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(raw, digest_size=10).hexdigest()


def cache_key(
    kind: str,
    engine: str,
    model_version: str,
    subject: str,
    history_version: str,
    params: str,
    catalogue_version: str | int = 0,
) -> str:
    """``recengine:rec:3:<kind>:<engine>:<model version>:c<catalogue epoch.version>:<subject hash>:<history
    version>:<params hash>``.

    ``subject`` is hashed so that arbitrary user ids (any length, any characters) make a well-formed key.
    """
    subject_h = hashlib.blake2b(subject.encode(), digest_size=10).hexdigest()
    return f"{KEY_PREFIX}{kind}:{engine}:{model_version}:c{catalogue_version}:{subject_h}:{history_version}:{params}"


class MemoryCache:
    """Least-recently-used entries with a time to live, bounded by ``max_entries``; one per process."""

    backend = "memory"

    def __init__(self, max_entries: int = 100_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries = max_entries
        self._clock = clock
        self._data: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._data)

    async def get(self, key: str) -> bytes | None:
        entry = self._data.get(key)
        if entry is None:
            return None
        expires, value = entry
        if expires <= self._clock():
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return value

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        if ttl_s <= 0 or self.max_entries <= 0:
            return
        self._data[key] = (self._clock() + ttl_s, value)
        self._data.move_to_end(key)
        while len(self._data) > self.max_entries:
            self._data.popitem(last=False)

    async def delete(self, key: str) -> None:
        self._data.pop(key, None)

    async def clear(self) -> None:
        self._data.clear()

    async def close(self) -> None:
        self._data.clear()


class RedisCache:
    """Entries in Redis with ``PSETEX``; errors propagate (the fail-over decides what to do with them)."""

    backend = "redis"

    def __init__(self, client: Redis) -> None:
        self.client = client

    async def get(self, key: str) -> bytes | None:
        value: Any = await self.client.get(key)
        return value if value is None else bytes(value)

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        if ttl_s <= 0:
            return
        await self.client.set(key, value, px=max(1, int(ttl_s * 1000)))

    async def delete(self, key: str) -> None:
        await self.client.delete(key)

    async def close(self) -> None:
        await self.client.aclose()


class FailoverCache:
    """Redis while it answers; the in-process cache while it does not; Redis again once it is back.

    ``on_redis_error()`` is called for every lookup that Redis did not answer — it failed, or it is marked down
    and was not asked — before the in-process cache answers it instead. Counting only the calls that failed would
    show an outage as one error per retry interval: the history read that comes first in a request is what
    usually finds Redis gone, and the cache lookup after it is not even tried.
    """

    def __init__(
        self,
        primary: Cache,
        fallback: MemoryCache,
        health: RedisHealth,
        on_redis_error: Callable[[], None] = lambda: None,
    ) -> None:
        self.primary = primary
        self.fallback = fallback
        self.health = health
        self.on_redis_error = on_redis_error

    @property
    def backend(self) -> str:
        """Where answers go now: ``redis``, or ``memory`` while Redis is unreachable."""
        return "memory" if self.health.degraded else "redis"

    async def get(self, key: str) -> bytes | None:
        return await self.health.attempt(partial(self.primary.get, key), partial(self._get_from_memory, key))

    async def _get_from_memory(self, key: str) -> bytes | None:
        self.on_redis_error()
        return await self.fallback.get(key)

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        await self.health.attempt(
            partial(self.primary.set, key, value, ttl_s), partial(self.fallback.set, key, value, ttl_s)
        )

    async def delete(self, key: str) -> None:
        await self.fallback.delete(key)
        await self.health.attempt(partial(self.primary.delete, key), nothing)

    async def close(self) -> None:
        await self.fallback.close()
        await self.primary.close()
