"""One contract, every EventLog (SQLite, Redis Streams); durability."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from recengine.serving.events import Event, EventLog, RedisStreamEventLog, SqliteEventLog
from recengine.serving.redis import redis_client

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["sqlite", "redis"])
async def log(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EventLog]:
    if request.param == "sqlite":
        impl: EventLog = SqliteEventLog(tmp_path / "events.sqlite3")
    else:
        client = redis_client(request.getfixturevalue("redis_url"), 1000)
        impl = RedisStreamEventLog(client, stream=f"test:events:{uuid.uuid4().hex}")
    yield impl
    if isinstance(impl, RedisStreamEventLog):
        await impl.client.delete(impl.stream)
    await impl.close()


def ev(n: int, user: str = "u1", item: str | None = None, eid: str | None = None) -> Event:
    return Event(eid or f"e{n}-{uuid.uuid4().hex[:6]}", user, item or f"i{n}", "view", 1_700_000_000.0 + n)


async def test_append_then_read_in_order(log: EventLog) -> None:
    events = [ev(i) for i in range(5)]
    assert await log.append(events) == [True] * 5
    rows = await log.read()
    assert [e for _, e in rows] == events
    seqs = [s for s, _ in rows]
    assert seqs == sorted(seqs) and len(set(seqs)) == 5
    assert await log.count() == 5


async def test_event_id_makes_retries_idempotent(log: EventLog) -> None:
    a, b = ev(1, eid="same"), ev(2, eid="other")
    assert await log.append([a, b]) == [True, True]
    assert await log.append([a, ev(3)]) == [False, True]
    assert await log.append([ev(4, eid="dup"), ev(4, eid="dup")]) == [True, False]
    assert await log.count() == 4


async def test_read_after_a_sequence_number_pages_through(log: EventLog) -> None:
    await log.append([ev(i) for i in range(7)])
    first = await log.read(0, 3)
    rest = await log.read(first[-1][0], 100)
    assert len(first) == 3 and len(rest) == 4
    assert [e.item_id for _, e in first + rest] == [f"i{i}" for i in range(7)]


async def test_empty_append(log: EventLog) -> None:
    assert await log.append([]) == []


async def test_sqlite_events_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "log.sqlite3"
    first = SqliteEventLog(path)
    await first.append([ev(1, eid="kept")])
    await first.close()
    second = SqliteEventLog(path)
    assert [e.event_id for _, e in await second.read()] == ["kept"]
    assert await second.append([ev(1, eid="kept")]) == [False]
    await second.close()


def test_sqlite_log_uses_wal_and_full_sync(tmp_path: Path) -> None:
    import sqlite3

    log = SqliteEventLog(tmp_path / "x.sqlite3")
    mode = log._executor.submit(lambda: log._conn.execute("PRAGMA journal_mode").fetchone()[0]).result()
    sync = log._executor.submit(lambda: log._conn.execute("PRAGMA synchronous").fetchone()[0]).result()
    assert mode == "wal" and sync == 2  # 2 = FULL
    log._executor.submit(log._conn.close).result()
    with pytest.raises(sqlite3.ProgrammingError):
        log._conn.execute("SELECT 1")
