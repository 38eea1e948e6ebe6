"""One contract, every EventLog (SQLite, Redis Streams): durability, the merge watermark, trimming, the cap."""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import redis

from recengine.errors import EventLogFull
from recengine.serving.events import Event, EventLog, RedisStreamEventLog, Retention, SqliteEventLog
from recengine.serving.redis import redis_client

pytestmark = pytest.mark.anyio

OpenLog = Callable[..., EventLog]


@pytest.fixture(params=["sqlite", "redis"])
async def open_log(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[OpenLog]:
    """Opens the backend's log — the same file or stream each time, as a restarted server would."""
    stream = f"test:events:{uuid.uuid4().hex}"
    opened: list[EventLog] = []

    def open_(retention: Retention | None = None) -> EventLog:
        if request.param == "sqlite":
            impl: EventLog = SqliteEventLog(tmp_path / "events.sqlite3", retention)
        else:
            client = redis_client(request.getfixturevalue("redis_url"), 1000)
            impl = RedisStreamEventLog(client, stream=stream, retention=retention)
        opened.append(impl)
        return impl

    yield open_
    for impl in opened:
        await impl.close()
    if request.param == "redis":
        cleanup = redis.Redis.from_url(request.getfixturevalue("redis_url"))
        cleanup.delete(*cleanup.keys(stream + "*") or [stream])
        cleanup.close()


@pytest.fixture
def log(open_log: OpenLog) -> EventLog:
    return open_log()


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


# ---- the watermark, trimming and the cap ---------------------------------------------------------------------------
def batch(start: int, n: int) -> list[Event]:
    return [ev(i, item=f"i{i}", eid=f"b{i}") for i in range(start, start + n)]


async def all_events(log: EventLog) -> list[tuple[int, Event]]:
    rows: list[tuple[int, Event]] = []
    while page := await log.read(rows[-1][0] if rows else 0, 100):
        rows += page
    return rows


async def test_the_log_stays_bounded_under_appends_once_events_are_merged(open_log: OpenLog) -> None:
    log = open_log(Retention(trim_every=50))
    sizes = []
    for round_ in range(20):
        await log.append(batch(round_ * 50, 50))
        newest = (await log.read(0, 100_000))[-1][0]
        assert await log.mark_merged(newest) == newest
        sizes.append(await log.count())
    # 1000 events appended; the writer trims what was merged as it goes: never more than two batches held.
    assert max(sizes) <= 100, sizes
    state = await log.state()
    assert state.size == await log.count() == len(await all_events(log)) <= 100
    assert state.unmerged == 0 and state.trimmed_up_to <= state.merged_up_to


async def test_unmerged_events_are_never_trimmed(open_log: OpenLog) -> None:
    log = open_log(Retention(trim_every=7))
    await log.append(batch(0, 100))
    rows = await all_events(log)
    mark = rows[39][0]  # events 0..39 are in a data set; 40.. are not
    assert await log.mark_merged(mark) == mark
    for start in range(100, 300, 10):  # many appends, each crossing the trim interval
        await log.append(batch(start, 10))
    await log.trim()
    await log.trim(now=time.time() + 10 * 86_400)
    kept = await all_events(log)
    assert [e.event_id for _, e in kept if _ > mark] == [f"b{i}" for i in range(40, 300)]
    assert all(seq > mark for seq, _ in kept), "with no retention window every merged event is trimmed"
    state = await log.state()
    assert state.merged_up_to == mark and state.unmerged == 260 and state.size == len(kept) == 260
    assert 0 < state.trimmed_up_to <= mark


async def test_nothing_is_trimmed_before_a_merge(open_log: OpenLog) -> None:
    log = open_log(Retention(trim_every=1))
    for start in range(0, 500, 50):
        await log.append(batch(start, 50))
    assert await log.trim(now=time.time() + 10 * 86_400) == 0
    assert [e.event_id for _, e in await all_events(log)] == [f"b{i}" for i in range(500)]
    state = await log.state()
    assert (state.merged_up_to, state.trimmed_up_to, state.unmerged, state.size) == (0, 0, 500, 500)


async def test_merged_events_stay_for_the_retention_window(open_log: OpenLog) -> None:
    log = open_log(Retention(retain_merged_s=3600, trim_every=1_000_000))
    await log.append(batch(0, 10))
    await log.mark_merged((await log.read())[-1][0])
    assert await log.trim() == 0
    assert len(await log.read()) == 10
    removed = await log.trim(now=time.time() + 7200)  # an hour later than the window
    # SQLite keeps its newest row (its numbering would restart otherwise); a stream keeps nothing merged.
    assert removed >= 9 and await log.count() == 10 - removed == len(await log.read())


async def test_appends_past_the_unmerged_cap_are_refused_whole(open_log: OpenLog) -> None:
    log = open_log(Retention(max_unmerged=10))
    assert await log.append(batch(0, 8)) == [True] * 8
    with pytest.raises(EventLogFull) as refused:
        await log.append(batch(8, 3))
    assert (refused.value.unmerged, refused.value.limit, refused.value.batch) == (8, 10, 3)
    assert "serving.max_unmerged_events = 10" in str(refused.value) and "nothing stored" in str(refused.value)
    assert [e.event_id for _, e in await log.read()] == [f"b{i}" for i in range(8)]  # nothing of the batch
    # Duplicates take no room: a retry of an acknowledged event is answered even when the log is full.
    assert await log.append([ev(0, eid="b0"), *batch(8, 2)]) == [False, True, True]
    with pytest.raises(EventLogFull):
        await log.append(batch(10, 1))
    assert await log.append([ev(0, eid="b0"), ev(1, eid="b9")]) == [False, False]
    assert (await log.state()).unmerged == 10
    # A merge frees the room.
    await log.mark_merged((await log.read())[-1][0])
    assert await log.append(batch(10, 10)) == [True] * 10
    assert [e.event_id for _, e in await all_events(log)] == [f"b{i}" for i in range(20)]


async def test_the_watermark_survives_reopening(open_log: OpenLog) -> None:
    first = open_log()
    await first.append(batch(0, 5))
    seqs = [s for s, _ in await first.read()]
    await first.mark_merged(seqs[2])
    before = await first.state()
    await first.close()
    second = open_log()
    after = await second.state()
    assert after == before
    assert (after.merged_up_to, after.unmerged, after.size) == (seqs[2], 2, 5)
    assert await second.append(batch(5, 1)) == [True]
    assert (await second.state()).unmerged == 3


async def test_the_watermark_only_moves_forward_and_names_a_stored_event(log: EventLog) -> None:
    assert await log.mark_merged(10**18) == 0  # an empty log has nothing to merge
    await log.append(batch(0, 5))
    seqs = [s for s, _ in await log.read()]
    assert await log.mark_merged(seqs[3]) == seqs[3]
    assert await log.mark_merged(seqs[1]) == seqs[3]  # never backwards
    assert await log.mark_merged(seqs[-1] + 10**9) == seqs[-1]  # never past the newest event
    await log.append(batch(5, 2))
    assert (await log.state()).unmerged == 2  # new events land after the watermark


async def test_a_log_written_before_the_watermark_existed_counts_every_event_unmerged(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    # SQLite: the old schema, no log_state table. Redis: entries without positions, no state hash.
    old_sqlite = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(old_sqlite)
    conn.execute(
        "CREATE TABLE events (seq INTEGER PRIMARY KEY, event_id TEXT NOT NULL UNIQUE, user_id TEXT NOT NULL, "
        "item_id TEXT NOT NULL, type TEXT NOT NULL, timestamp REAL NOT NULL, received REAL NOT NULL)"
    )
    conn.executemany(
        "INSERT INTO events (event_id, user_id, item_id, type, timestamp, received) VALUES (?, 'u', ?, 'view', 1, 1)",
        [(f"old{i}", f"i{i}") for i in range(5)],
    )
    conn.commit()
    conn.close()
    logs: list[EventLog] = [SqliteEventLog(old_sqlite, Retention(trim_every=1))]
    url = request.getfixturevalue("redis_url")
    stream = f"test:events:{uuid.uuid4().hex}"
    raw = redis.Redis.from_url(url)
    for i in range(5):
        raw.xadd(stream, {"event_id": f"old{i}", "user_id": "u", "item_id": f"i{i}", "type": "view", "timestamp": "1"})
    logs.append(RedisStreamEventLog(redis_client(url, 1000), stream=stream, retention=Retention(trim_every=1)))
    try:
        for log in logs:
            assert (await log.state()).unmerged == 5
            assert await log.append(batch(0, 2)) == [True, True]
            seqs = [s for s, _ in await log.read()]
            await log.mark_merged(seqs[2])  # an old entry
            assert (await log.state()).unmerged == 4
            await log.trim()
            assert [e.event_id for _, e in await log.read()] == ["old3", "old4", "b0", "b1"]
            await log.mark_merged(seqs[-1])
            assert (await log.state()).unmerged == 0
    finally:
        for log in logs:
            await log.close()
        raw.delete(*raw.keys(stream + "*"))
        raw.close()


async def test_a_redis_out_of_memory_stores_nothing_and_is_storage_unavailable(redis_url: str) -> None:
    # noeviction + maxmemory (the compose stack): the last guard must refuse whole batches, never half of one.
    from recengine.errors import StorageUnavailable

    raw = redis.Redis.from_url(redis_url)
    stream = f"test:events:{uuid.uuid4().hex}"
    log = RedisStreamEventLog(redis_client(redis_url, 1000), stream=stream, retention=Retention(max_unmerged=100))
    before = raw.config_get("maxmemory")["maxmemory"]
    try:
        assert await log.append(batch(0, 2)) == [True, True]
        raw.config_set("maxmemory", 1)
        with pytest.raises(StorageUnavailable, match="nothing stored"):
            await log.append(batch(2, 3))
        assert (await log.state()).unmerged == 2  # the state can still be read, for the metrics
    finally:
        raw.config_set("maxmemory", before)
    assert [e.event_id for _, e in await log.read()] == ["b0", "b1"]
    assert not raw.exists(*[f"{stream}:id:b{i}" for i in range(2, 5)])  # no marker that would swallow a retry
    assert await log.append(batch(2, 3)) == [True, True, True]
    await log.close()
    raw.delete(*raw.keys(stream + "*"))
    raw.close()
