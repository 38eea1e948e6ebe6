"""Events in: durably logged first, then into the histories; retries change nothing; replay rebuilds histories."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from recengine.serving.events import Event, SqliteEventLog
from recengine.serving.history import MemoryHistoryStore
from recengine.serving.ingest import EventIngest

pytestmark = pytest.mark.anyio


@pytest.fixture
async def ingest(tmp_path: Path) -> AsyncIterator[EventIngest]:
    events = SqliteEventLog(tmp_path / "events.sqlite3")
    yield EventIngest(events, MemoryHistoryStore(50))
    await events.close()


async def test_duplicate_events_change_nothing(ingest: EventIngest) -> None:
    e = Event("dup-1", "u9", "i7", "click", 1.7e9)
    assert (await ingest.ingest([e])).accepted == 1
    before = await ingest.history.get("u9")
    again = await ingest.ingest([e])
    assert (again.accepted, again.duplicates) == (0, 1)
    assert await ingest.history.get("u9") == before


async def test_replay_rebuilds_histories_from_the_log(ingest: EventIngest) -> None:
    await ingest.ingest([Event(f"r{i}", "replayed", f"i{i}", "view", 1.7e9 + i) for i in range(1, 4)])
    fresh = EventIngest(ingest.log, MemoryHistoryStore(50))
    assert await fresh.replay(batch=2) == 3
    assert (await fresh.history.get("replayed")).items == ["i1", "i2", "i3"]
