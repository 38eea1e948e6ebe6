"""The gateway object: everything the routes need, built in the app's lifespan, and its background upkeep."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from redis.asyncio import Redis

from recengine.api.runtime import OVERRIDES_KEY, apply_overrides, decode_overrides, runtime_config
from recengine.errors import ConfigError, DataError
from recengine.serving.breaker import State
from recengine.serving.cache import REDIS_ERRORS, RedisHealth
from recengine.serving.events import EventLog, RedisStreamEventLog, SqliteEventLog
from recengine.serving.history import SeedHistories
from recengine.serving.registry import LoadedModel, ModelRegistry
from recengine.serving.service import RecommendationService
from recengine.settings import Settings

log = logging.getLogger("recengine.api")


@dataclass
class Gateway:
    """Everything the routes need, built in the lifespan and stored on ``app.state.gateway``."""

    settings: Settings
    """The settings in force (the start-up settings with the runtime overrides applied)."""
    base_settings: Settings
    service: RecommendationService
    registry: ModelRegistry
    redis: Redis | None = None
    health: RedisHealth | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    _overrides_raw: bytes | None = None

    @property
    def redis_status(self) -> str:
        if self.health is None:
            return "not configured"
        if self.health.degraded:
            return f"unreachable: {self.health.last_error}"
        return "ok"

    async def probe_redis(self) -> None:
        """While degraded, ping Redis (no more often than the retry interval) so recovery is noticed."""
        if self.redis is None or self.health is None or not self.health.degraded or not self.health.should_try():
            return
        try:
            await self.redis.ping()
        except REDIS_ERRORS as exc:
            self.health.failed(exc)
        else:
            self.health.succeeded()

    def apply_overrides(self, overrides: dict[str, Any]) -> None:
        """Settings = start-up settings + ``overrides``; routing sees the change on its next request."""
        settings = apply_overrides(self.base_settings, overrides)
        self.settings = settings
        self.overrides = dict(overrides)
        self.service.set_config(runtime_config(settings))

    async def sync_overrides(self) -> None:
        """Pick up runtime overrides another worker or replica stored in Redis."""
        if self.redis is None or self.health is None or not self.health.should_try():
            return
        try:
            raw: Any = await self.redis.get(OVERRIDES_KEY)
        except REDIS_ERRORS as exc:
            self.health.failed(exc)
            return
        if raw != self._overrides_raw:
            self._overrides_raw = raw
            try:
                self.apply_overrides(decode_overrides(raw))
            except Exception as exc:  # a bad shared value must not stop this worker
                log.error("ignoring invalid runtime overrides in Redis: %s", exc)


class MetricsObserver:
    """The service's observer, wired to ``observability.metrics``."""

    def __init__(self) -> None:
        from recengine.observability import metrics

        self.m = metrics

    def cache(self, backend: str, hit: bool) -> None:
        self.m.record_cache(backend, "hit" if hit else "miss")

    def inference(self, engine: str, seconds: float, outcome: Literal["ok", "error", "timeout"]) -> None:
        self.m.observe_inference(engine, seconds)

    def fallback(self, engine: str, reason: str) -> None:
        self.m.record_fallback(engine, reason)

    def answered(self, kind: str, engine: str, fallback: bool) -> None:
        pass  # counted per HTTP request by the middleware, with the engine label

    def circuit(self, engine: str, state: State) -> None:
        self.m.set_circuit_state(engine, state)


def seed_histories(settings: Settings) -> SeedHistories:
    from recengine.data.dataset import Dataset

    path = settings.data.dir
    if not (Path(path) / "manifest.json").is_file():
        log.warning("no processed data set at %s: histories start empty (set data.dir)", path)
        return SeedHistories.empty()
    try:
        return SeedHistories.from_dataset(Dataset.load(path))
    except DataError as exc:
        log.error("cannot seed histories from %s: %s", path, exc)
        return SeedHistories.empty()


def event_log(settings: Settings, redis: Redis | None) -> EventLog:
    if settings.serving.events_backend == "redis":
        if redis is None:
            raise ConfigError("serving.events_backend = 'redis' needs cache.redis_url")
        return RedisStreamEventLog(redis)
    path = settings.serving.events_db or Path(settings.serving.artifacts_dir) / "events.sqlite3"
    return SqliteEventLog(path)


def publish_model(model: LoadedModel) -> None:
    from recengine.observability import metrics

    created = model.engine.config.get("created")
    ts = None
    if isinstance(created, str):
        with contextlib.suppress(ValueError):
            ts = time.mktime(time.strptime(created, "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    metrics.set_model(model.name, model.version, ts)


async def maintain(gw: Gateway, every_s: float) -> None:
    """Background upkeep: pick up new model versions, shared overrides and Redis recovery."""
    while True:
        await asyncio.sleep(every_s)
        try:
            stale = gw.registry.stale()
            if stale:
                for result in await asyncio.to_thread(gw.registry.reload, stale):
                    if result.status == "refused":
                        log.error("model reload refused: %s", result.error)
            await gw.probe_redis()
            await gw.sync_overrides()
            if gw.settings.observability.metrics:
                from recengine.observability import metrics

                metrics.set_store_sizes(events=await gw.service.events.count())
        except Exception:  # upkeep must never die: the next round may succeed
            log.exception("gateway upkeep failed")
