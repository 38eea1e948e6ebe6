"""The gateway object: everything the routes need, built in the app's lifespan, and its background upkeep."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from recengine.api.runtime import OVERRIDES_KEY, apply_overrides, decode_overrides, encode_overrides, runtime_config
from recengine.catalogue.view import CatalogueView
from recengine.errors import StorageUnavailable
from recengine.serving.attribution import Attributor
from recengine.serving.ingest import EventIngest
from recengine.serving.redis import REDIS_ERRORS, nothing
from recengine.serving.registry import LoadedModel, ModelRegistry
from recengine.serving.service import RecommendationService
from recengine.serving.stores import Stores
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
    stores: Stores
    ingest: EventIngest
    overrides: dict[str, Any] = field(default_factory=dict)
    attribution: Attributor | None = None
    """Credits events to the answers they respond to; None when impressions are not recorded."""
    _overrides_raw: bytes | None = None
    catalogue: CatalogueView | None = None
    """This process's view of the item catalogue (``catalogue/view.py``)."""

    def apply_overrides(self, overrides: dict[str, Any]) -> None:
        """Settings = start-up settings + ``overrides``; routing sees the change on its next request."""
        settings = apply_overrides(self.base_settings, overrides)
        self.settings = settings
        self.overrides = dict(overrides)
        self.service.set_config(runtime_config(settings))
        if settings.observability.metrics:
            from recengine.observability import metrics

            metrics.set_experiment_arms(settings.routing.experiment)

    async def share_overrides(self) -> None:
        """Store the overrides in Redis, where the other workers and replicas pick them up on their next sync."""
        redis, health = self.stores.redis, self.stores.health
        if redis is not None and health is not None:
            await health.attempt(partial(redis.set, OVERRIDES_KEY, encode_overrides(self.overrides)), nothing)

    async def sync_overrides(self) -> None:
        """Pick up runtime overrides another worker or replica stored in Redis."""
        redis, health = self.stores.redis, self.stores.health
        if redis is None or health is None:
            return

        async def unchanged() -> bytes | None:
            return self._overrides_raw

        raw: Any = await health.attempt(partial(redis.get, OVERRIDES_KEY), unchanged)
        if raw != self._overrides_raw:
            self._overrides_raw = raw
            try:
                self.apply_overrides(decode_overrides(raw))
            except Exception as exc:  # a bad shared value must not stop this worker
                log.error("ignoring invalid runtime overrides in Redis: %s", exc)


def publish_model(model: LoadedModel) -> None:
    from recengine.observability import metrics

    created = model.engine.config.get("created")
    ts = None
    if isinstance(created, str):
        with contextlib.suppress(ValueError):
            ts = time.mktime(time.strptime(created, "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    metrics.set_model(model.name, model.version, ts)


async def maintain(gw: Gateway, every_s: float, stop: asyncio.Event) -> None:
    """Background upkeep until ``stop`` is set: pick up new model versions, shared overrides and Redis recovery,
    and publish the store sizes.

    The owner sets ``stop`` before cancelling the task: redis-py can swallow a cancellation that lands during a
    command (redis/redis-py#2028 and its kin; about every other cancel of a tight GET loop with redis 8.1), and a
    loop that relied on the cancellation alone would then run on and hang the shutdown.
    """
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)
        if stop.is_set():
            return
        try:
            stale = gw.registry.stale()
            if stale:
                for result in await asyncio.to_thread(gw.registry.reload, stale):
                    if result.status == "refused":
                        log.error("model reload refused: %s", result.error)
            await gw.stores.probe()
            await gw.sync_overrides()
            if gw.catalogue is not None:
                await gw.catalogue.sync()  # an idle worker keeps up too (and the gauge below is current)
            if gw.settings.observability.metrics:
                await publish_event_log(gw)
        except Exception:  # upkeep must never die: the next round may succeed
            log.exception("gateway upkeep failed")


async def publish_event_log(gw: Gateway) -> None:
    """The store sizes (users with a live history, events in the log) and the log's unmerged backlog, for the
    dashboard and the log-full alert. While Redis is down the history size is memory's and the event log's
    figures keep their last values (no upkeep error every round)."""
    from recengine.observability import metrics

    metrics.set_store_sizes(history=await gw.stores.history.size())
    if gw.catalogue is not None:
        metrics.set_catalogue_size(*gw.catalogue.sizes())
    try:
        state = await gw.stores.events.state()
    except StorageUnavailable:  # a Redis event log while Redis is down
        return
    except REDIS_ERRORS:
        return
    metrics.set_store_sizes(events=state.size)
    metrics.set_event_log_backlog(state.unmerged, gw.settings.serving.max_unmerged_events or None)
