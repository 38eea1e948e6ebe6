"""Impressions in, events credited: the recorder that keeps impressions off the request path, and the attributor.

    recorder = ImpressionRecorder(store)         # the app's lifespan; recorder.start() runs its flush loop
    recorder.record(answer)                      # the service, once per answer: an append to a bounded queue
    attributor = Attributor(store, recorder, window_s=1800)
    attributed = await attributor.attribute(events, recommendation_ids)   # POST /api/v1/events

Recording costs a request one list append: a background task writes the queue in batches every
``FLUSH_EVERY_S``. When the store is down the batch is dropped (with a warning a minute) and answers go on; when
the queue is full (a store slower than the traffic) new impressions are dropped, never the request.

An event is attributed to an impression of the same user that showed its item: the impression its
``recommendation_id`` names, else the newest one within ``window_s`` before the event. Independently, the
newest impression of the user within the window learns the rank of this, its next, event (0 if the item was not
shown) — online HR@K reads that. Attribution is idempotent by ``event_id``, so a retried batch changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from recengine.errors import StorageUnavailable
from recengine.serving.events import Event
from recengine.serving.impressions import Attribution, Impression, ImpressionStore
from recengine.serving.types import Answer

log = logging.getLogger("recengine.serving")

#: How often the recorder writes its queue, and the most impressions one write holds.
FLUSH_EVERY_S = 0.2
MAX_BATCH = 500
#: An impression may carry a time up to this much after the event's: client clocks differ from the server's.
CLOCK_SKEW_S = 60.0
WARN_EVERY_S = 60.0
#: The most an event request waits for attribution (a slow impression store must not hold events back).
ATTRIBUTE_TIMEOUT_S = 2.0
#: The most attribution waits for this worker's queued answers to be written first.
FLUSH_WAIT_S = 1.0

Hook = Callable[[str, str | None], None]
"""``hook(engine, arm)``: an impression recorded / an event attributed (the Prometheus counters)."""


def impression_of(answer: Answer, timestamp: float) -> Impression:
    items = tuple(str(row["item_id"]) for row in orjson.loads(answer.items_json))
    experiment, arm = answer.experiment if answer.experiment is not None else (None, None)
    return Impression(
        recommendation_id=answer.recommendation_id,
        user_id=answer.user_id,
        engine=answer.engine,
        model_version=answer.model_version,
        items=items,
        timestamp=timestamp,
        experiment=experiment,
        arm=arm,
        credits=tuple(answer.credits),
        kind="similar" if answer.item_id is not None else "rec",
    )


class _Throttled:
    """Log a warning at most once per ``WARN_EVERY_S``."""

    def __init__(self) -> None:
        self._at = float("-inf")

    def warn(self, message: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._at >= WARN_EVERY_S:
            self._at = now
            log.warning(message, *args)


class ImpressionRecorder:
    def __init__(
        self,
        store: ImpressionStore,
        *,
        max_pending: int = 20_000,
        trim_every_s: float = 60.0,
        on_record: Hook | None = None,
    ) -> None:
        self.store = store
        self.max_pending = max_pending
        self.trim_every_s = trim_every_s
        self.on_record = on_record
        self.recorded = 0
        self.dropped = 0
        self._pending: deque[tuple[Answer, float]] = deque()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._trimmed_at = time.monotonic()
        self._warn = _Throttled()

    def record(self, answer: Answer) -> None:
        """Queue the impression of ``answer`` (never blocks, never raises)."""
        if len(self._pending) >= self.max_pending:
            self.dropped += 1
            self._warn.warn("impression queue full (%d): dropping impressions; is the store slow?", self.max_pending)
            return
        self._pending.append((answer, time.time()))
        if self.on_record is not None:
            arm = answer.experiment[1] if answer.experiment is not None else None
            with contextlib.suppress(Exception):
                self.on_record(answer.engine, arm)

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def flush(self) -> int:
        """Write what is queued now; returns the impressions written. A store that fails loses that batch."""
        if not self._pending:
            return 0
        written = 0
        async with self._lock:
            while self._pending:
                batch = [self._pending.popleft() for _ in range(min(MAX_BATCH, len(self._pending)))]
                try:
                    await self.store.add([impression_of(a, ts) for a, ts in batch])
                except StorageUnavailable as exc:
                    self.dropped += len(batch)
                    self._warn.warn("dropping %d impressions: %s", len(batch), exc)
                    break
                except Exception:
                    self.dropped += len(batch)
                    log.exception("dropping %d impressions", len(batch))
                    break
                written += len(batch)
            self.recorded += written
        return written

    async def _loop(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), FLUSH_EVERY_S)
            await self.flush()
            if time.monotonic() - self._trimmed_at >= self.trim_every_s:
                self._trimmed_at = time.monotonic()
                try:
                    await self.store.trim()
                except Exception as exc:  # the next round tries again
                    self._warn.warn("impression store trim failed: %s", exc)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def close(self) -> None:
        """Stop the loop and write what is left."""
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()


class Attributor:
    def __init__(
        self,
        store: ImpressionStore,
        recorder: ImpressionRecorder | None,
        window_s: float,
        on_attributed: Hook | None = None,
        timeout_s: float = ATTRIBUTE_TIMEOUT_S,
    ) -> None:
        self.store = store
        self.recorder = recorder
        self.window_s = window_s
        self.on_attributed = on_attributed
        self.timeout_s = timeout_s
        self._warn = _Throttled()

    async def attribute(self, events: Sequence[Event], recommendation_ids: Sequence[str | None]) -> int:
        """Credit each event to the impression it answers, if any; returns how many events are attributed (a
        retry of the same events answers the same). Raises StorageUnavailable."""
        if self.recorder is not None:
            # This worker's latest answers are visible before their clicks. Shielded: a flush that takes too long
            # goes on writing in the background instead of losing the batch it holds.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.recorder.flush()), FLUSH_WAIT_S)
        by_user: dict[str, list[tuple[Event, str | None]]] = {}
        for event, rid in zip(events, recommendation_ids, strict=True):
            by_user.setdefault(event.user_id, []).append((event, rid))
        found: list[Attribution] = []
        for user, rows in by_user.items():
            rows.sort(key=lambda r: r[0].timestamp)
            recent = await self.store.recent(user, rows[0][0].timestamp - self.window_s)
            for event, rid in rows:
                shown = [
                    i
                    for i in recent
                    if event.timestamp - self.window_s <= i.timestamp <= event.timestamp + CLOCK_SKEW_S
                ]
                attribution = await self._credit(event, rid, shown)
                if attribution is not None:
                    found.append(attribution)
                if shown:
                    latest = shown[-1]
                    await self.store.set_next(latest.recommendation_id, latest.rank_of(event.item_id) or 0)
        flags = await self.store.attribute(found)
        if self.on_attributed is not None:
            for attribution, new in zip(found, flags, strict=True):
                if new:
                    with contextlib.suppress(Exception):
                        self.on_attributed(attribution.credit, attribution.arm)
        return len(found)

    async def _credit(self, event: Event, rid: str | None, shown: list[Impression]) -> Attribution | None:
        if rid is not None:
            named = next((i for i in shown if i.recommendation_id == rid), None) or await self.store.get(rid)
            if named is not None and named.user_id in (None, event.user_id):
                rank = named.rank_of(event.item_id)
                if rank is not None:
                    return self._attribution(event, named, rank, "id")
        for imp in reversed(shown):
            rank = imp.rank_of(event.item_id)
            if rank is not None:
                return self._attribution(event, imp, rank, "window")
        return None

    @staticmethod
    def _attribution(event: Event, imp: Impression, rank: int, how: Any) -> Attribution:
        return Attribution(
            event_id=event.event_id,
            recommendation_id=imp.recommendation_id,
            user_id=event.user_id,
            item_id=event.item_id,
            rank=rank,
            credit=imp.credit_of(rank),
            how=how,
            timestamp=event.timestamp,
            experiment=imp.experiment,
            arm=imp.arm,
        )

    async def try_attribute(self, events: Sequence[Event], recommendation_ids: Sequence[str | None]) -> int | None:
        """:meth:`attribute` within ``timeout_s``, but a store that is down or slow costs the answer its count
        (None), never the request."""
        try:
            return await asyncio.wait_for(self.attribute(events, recommendation_ids), self.timeout_s)
        except TimeoutError:
            self._warn.warn("events not attributed: the impression store took over %g s", self.timeout_s)
        except StorageUnavailable as exc:
            self._warn.warn("events not attributed: %s", exc)
        except Exception:
            log.exception("events not attributed")
        return None
