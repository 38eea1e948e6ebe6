"""Every backing store the server needs, built from the settings in one place, and closed in one place.

    stores = await open_stores(settings)   # the app's lifespan
    stores.cache, stores.history, stores.events
    await stores.close()

Without ``cache.redis_url`` everything is in process (the event log in SQLite). With it, the cache and the histories
live in Redis with in-process fall-backs behind one shared :class:`RedisHealth`, and the event log may be a Redis
stream (``serving.events_backend``). Nothing connects before :func:`open_stores` runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path

from redis.asyncio import Redis

from recengine.errors import ConfigError, DataError
from recengine.serving.cache import Cache, FailoverCache, MemoryCache, RedisCache
from recengine.serving.events import EventLog, RedisStreamEventLog, Retention, SqliteEventLog
from recengine.serving.history import (
    FailoverHistoryStore,
    HistoryStore,
    MemoryHistoryStore,
    RedisHistoryStore,
    SeedHistories,
)
from recengine.serving.redis import REDIS_ERRORS, RedisHealth, nothing, redis_client
from recengine.settings import Settings

log = logging.getLogger("recengine.serving")


@dataclass
class Stores:
    cache: Cache
    history: HistoryStore
    events: EventLog
    memory_cache: MemoryCache
    memory_history: MemoryHistoryStore
    redis: Redis | None = None
    health: RedisHealth | None = None
    """Shared by every user of ``redis``; None without Redis."""

    @property
    def degraded(self) -> bool:
        """Redis is configured but did not answer its last call: serving from memory."""
        return self.health is not None and self.health.degraded

    @property
    def redis_status(self) -> str:
        if self.health is None:
            return "not configured"
        if self.health.degraded:
            return f"unreachable: {self.health.last_error}"
        return "ok"

    async def probe(self) -> None:
        """While degraded, ping Redis (no more often than the retry interval) so recovery is noticed."""
        if self.redis is not None and self.health is not None and self.health.degraded:
            await self.health.attempt(self.redis.ping, nothing)

    async def sizes(self) -> tuple[int | None, int | None]:
        """(users with a live history, events in the log); None for a store that cannot say now (Redis down)."""
        history: int | None = await self.history.size()  # the fail-over answers from memory meanwhile
        try:
            events: int | None = await self.events.count()
        except REDIS_ERRORS:
            events = None
        return history, events

    async def close(self) -> None:
        await self.events.close()
        await self.memory_cache.close()
        await self.memory_history.close()
        if self.redis is not None:
            # The cache, the histories and a Redis event log share this one client.
            with contextlib.suppress(*REDIS_ERRORS):
                await self.redis.aclose()


async def open_stores(settings: Settings) -> Stores:
    """The cache, the history store (seeded from ``data.dir``) and the event log that ``settings`` ask for."""
    serving, cache_settings = settings.serving, settings.cache
    seed = await asyncio.to_thread(seed_histories, settings.data.dir)
    memory_cache = MemoryCache(cache_settings.max_entries)
    memory_history = MemoryHistoryStore(serving.history_max_len, seed)
    if not cache_settings.redis_url:
        events = event_log(settings, None)
        return Stores(memory_cache, memory_history, events, memory_cache, memory_history)
    redis = redis_client(cache_settings.redis_url, cache_settings.redis_timeout_ms)
    health = RedisHealth(cache_settings.retry_after_s)
    cache = FailoverCache(RedisCache(redis), memory_cache, health)
    if settings.observability.metrics:
        from recengine.observability import metrics

        health.on_change(lambda up: metrics.set_dependency_up("redis", up))
        metrics.set_dependency_up("redis", True)
        cache.on_redis_error = lambda: metrics.record_cache("redis", "error")
    stores = Stores(
        cache=cache,
        history=FailoverHistoryStore(RedisHistoryStore(redis, serving.history_max_len, seed), memory_history, health),
        events=event_log(settings, redis),
        memory_cache=memory_cache,
        memory_history=memory_history,
        redis=redis,
        health=health,
    )
    await health.attempt(redis.ping, nothing)
    if health.degraded:
        log.warning("Redis unreachable at start-up; serving degraded from memory: %s", health.last_error)
    return stores


def seed_histories(data_dir: Path) -> SeedHistories:
    """Every user's interactions in the processed data set at ``data_dir``; empty when there is none."""
    from recengine.data.dataset import CURRENT, Dataset

    if not (Path(data_dir) / "manifest.json").is_file() and not (Path(data_dir) / CURRENT).is_file():
        log.warning("no processed data set at %s: histories start empty (set data.dir)", data_dir)
        return SeedHistories.empty()
    try:
        return SeedHistories.from_dataset(Dataset.load(data_dir))
    except DataError as exc:
        log.error("cannot seed histories from %s: %s", data_dir, exc)
        return SeedHistories.empty()


def event_log(settings: Settings, redis: Redis | None) -> EventLog:
    serving = settings.serving
    cap = serving.max_unmerged_events or None  # 0: no cap
    retention = Retention(cap, serving.events_retain_merged_s, serving.events_trim_every)
    if serving.events_backend == "redis":
        if redis is None:
            raise ConfigError("serving.events_backend = 'redis' needs cache.redis_url")
        return RedisStreamEventLog(redis, retention=retention)
    return SqliteEventLog(serving.events_db_path, retention)
