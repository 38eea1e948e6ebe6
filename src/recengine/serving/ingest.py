"""Events in: the durable log first, then the histories — and the histories rebuilt from the log after a restart."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from recengine.errors import EventLogFull
from recengine.serving.events import Event, EventLog
from recengine.serving.history import HistoryStore

logger = logging.getLogger("recengine.serving")


@dataclass(frozen=True)
class IngestResult:
    accepted: int
    duplicates: int
    event_ids: list[str]


class EventIngest:
    # While the log stays full every request is refused: say so once a minute, not once a request.
    FULL_WARNING_EVERY_S = 60.0

    def __init__(self, log: EventLog, history: HistoryStore) -> None:
        self.log = log
        self.history = history
        self._warned_full_at = float("-inf")

    async def ingest(self, events: Sequence[Event]) -> IngestResult:
        """Write durably, then update the histories of the events that were new (retries change nothing)."""
        try:
            flags = await self.log.append(events)
        except EventLogFull as exc:
            now = time.monotonic()
            if now - self._warned_full_at >= self.FULL_WARNING_EVERY_S:
                self._warned_full_at = now
                logger.warning("refusing appends (503) until the log is merged: %s", exc)
            raise
        await self._append(event for event, new in zip(events, flags, strict=True) if new)
        accepted = sum(flags)
        return IngestResult(accepted, len(flags) - accepted, [e.event_id for e in events])

    async def replay(self, batch: int = 10_000, after: int = 0) -> int:
        """Rebuild in-process histories from the durable log (after a restart), from the events after ``after``
        (those the seed data set does not hold already); returns the events replayed."""
        total = 0
        while True:
            rows = await self.log.read(after, batch)
            if not rows:
                return total
            await self._append(e for _, e in rows)
            after = rows[-1][0]
            total += len(rows)

    async def _append(self, events: Iterable[Event]) -> None:
        # One append per user: a batch of a user's events is one round trip and one history version.
        by_user: dict[str, list[str]] = {}
        for e in events:
            by_user.setdefault(e.user_id, []).append(e.item_id)
        for user_id, items in by_user.items():
            await self.history.append(user_id, items)
