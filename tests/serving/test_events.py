"""One contract, every EventLog (SQLite, Redis Streams); durability; merging a log into training data."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from recengine.data.dataset import TRAIN, Dataset
from recengine.errors import DataError
from recengine.serving.events import (
    Event,
    EventLog,
    RedisStreamEventLog,
    SqliteEventLog,
    merge_event_log,
    read_sqlite_events,
)
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


def test_a_file_that_is_not_a_log_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.sqlite3"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(DataError, match=r"bad\.sqlite3"):
        read_sqlite_events(bad)
    with pytest.raises(DataError, match="not found"):
        read_sqlite_events(tmp_path / "missing.sqlite3")


async def test_merge_adds_known_pairs_to_train_only(small_dataset: Dataset, tmp_path: Path) -> None:
    ds = small_dataset
    user, item = ds.users.ids[3], ds.items.ids.ids[5]
    newest = int(ds.timestamp.max())
    log = SqliteEventLog(tmp_path / "ev.sqlite3")
    await log.append(
        [
            Event("a", user, item, "view", newest + 10),
            Event("b", user, item, "purchase", newest + 20),
            Event("c", "unknown-user", item, "view", newest + 30),
            Event("d", user, "unknown-item", "view", newest + 40),
        ]
    )
    await log.close()
    merged = merge_event_log(ds, tmp_path / "ev.sqlite3")
    assert merged.n_interactions == ds.n_interactions + 2
    assert merged.manifest["events_merged"]["n_added"] == 2
    assert merged.manifest["events_merged"]["n_skipped_unknown"] == 2
    assert merged.content_hash != ds.content_hash
    # same number of valid/test rows; the new rows are train rows of that user
    for code in (1, 2):
        assert (merged.split == code).sum() == (ds.split == code).sum()
    u = ds.users.index(user)
    train_seq = merged.sequences(max_split=TRAIN)[u]
    assert list(train_seq[-2:]) == [5, 5]
    # still sorted by user, then time
    assert np.all(np.diff(merged.user) >= 0)
    same_user = np.diff(merged.user) == 0
    assert np.all(np.diff(merged.timestamp)[same_user] >= 0)
    # merging the same log twice adds nothing more
    again = merge_event_log(merged, tmp_path / "ev.sqlite3")
    assert again.n_interactions == merged.n_interactions


async def test_train_with_events_counts_the_logged_events(small_dataset: Dataset, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from recengine.cli import app
    from recengine.engines.popularity import Popularity

    item = small_dataset.items.ids.ids[7]
    log = SqliteEventLog(tmp_path / "ev.sqlite3")
    newest = int(small_dataset.timestamp.max())
    users = small_dataset.users.ids[1:41]
    await log.append([Event(f"t{i}", u, item, "view", newest + i) for i, u in enumerate(users)])
    await log.close()
    env = {"RECENGINE_SERVING__ARTIFACTS_DIR": str(tmp_path / "art")}
    args = ["train", "--engine", "popularity", "--data", str(small_dataset.path)]
    plain = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "plain")], env=env)
    merged = CliRunner().invoke(
        app, [*args, "-o", str(tmp_path / "merged"), "--events", str(tmp_path / "ev.sqlite3")], env=env
    )
    assert plain.exit_code == 0 and merged.exit_code == 0, merged.output
    before = Popularity.load(tmp_path / "plain").counts[7]
    after = Popularity.load(tmp_path / "merged").counts[7]
    assert after - before == 40
