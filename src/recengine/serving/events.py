"""The durable event log: an event is acknowledged only once it is on disk, and ``event_id`` makes retries harmless.

    EventLog (protocol)
    ├── SqliteEventLog        the embedded default: one file, WAL journal, ``synchronous=FULL`` (fsync per commit)
    └── RedisStreamEventLog   a Redis stream shared by replicas; as durable as the server's AOF settings (run Redis
                              with ``appendonly yes`` and ``appendfsync always`` for the same guarantee)

Reading a log back into training data (``recengine train --events``) is :mod:`recengine.data.events`' job.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from redis.asyncio import Redis

from recengine.data.events import Event as Event  # re-exported: the event logs store and return these
from recengine.errors import DataError, StorageUnavailable
from recengine.serving.redis import REDIS_ERRORS


@runtime_checkable
class EventLog(Protocol):
    async def append(self, events: Sequence[Event]) -> list[bool]:
        """Store durably; one flag per event: True if new, False if its ``event_id`` was already stored."""
        ...

    async def read(self, after: int = 0, limit: int = 10_000) -> list[tuple[int, Event]]:
        """Events in arrival order with their sequence number, those after ``after`` only."""
        ...

    async def count(self) -> int: ...

    async def close(self) -> None: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq       INTEGER PRIMARY KEY,
    event_id  TEXT NOT NULL UNIQUE,
    user_id   TEXT NOT NULL,
    item_id   TEXT NOT NULL,
    type      TEXT NOT NULL,
    timestamp REAL NOT NULL,
    received  REAL NOT NULL
)
"""


class SqliteEventLog:
    """SQLite in WAL mode with ``synchronous=FULL``: a committed event survives a crash or power loss.

    All database work runs on one dedicated thread: writes are serialised (SQLite has one writer anyway) and
    the event loop never waits on an fsync.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="eventlog")
        self._lock = threading.Lock()
        self._conn = self._executor.submit(self._open).result()

    def _open(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30.0)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise DataError(f"{self.path}: cannot open the event log ({exc})") from None
        return conn

    def _append(self, events: Sequence[Event]) -> list[bool]:
        now = time.time()
        flags: list[bool] = []
        with self._lock:
            try:
                cur = self._conn.cursor()
                cur.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StorageUnavailable(f"{self.path}: event log unavailable ({exc}); nothing stored") from None
            try:
                for e in events:
                    cur.execute(
                        "INSERT OR IGNORE INTO events "
                        "(event_id, user_id, item_id, type, timestamp, received) VALUES (?, ?, ?, ?, ?, ?)",
                        (e.event_id, e.user_id, e.item_id, e.type, e.timestamp, now),
                    )
                    flags.append(cur.rowcount == 1)
                cur.execute("COMMIT")
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    cur.execute("ROLLBACK")
                raise StorageUnavailable(f"{self.path}: event log write failed ({exc}); nothing stored") from None
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    cur.execute("ROLLBACK")
                raise
        return flags

    def _read(self, after: int, limit: int) -> list[tuple[int, Event]]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT seq, event_id, user_id, item_id, type, timestamp FROM events WHERE seq > ? "
                "ORDER BY seq LIMIT ?",
                (after, limit),
            ).fetchall()
        return [(int(r[0]), Event(r[1], r[2], r[3], r[4], float(r[5]))) for r in rows]

    def _count(self) -> int:
        with self._lock:
            # MAX(seq), not COUNT(*): O(1) on a log of millions; equal, since rows are never deleted and a plain
            # INTEGER PRIMARY KEY (no AUTOINCREMENT) spends no number on an ignored duplicate.
            return int(self._conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0])

    async def append(self, events: Sequence[Event]) -> list[bool]:
        if not events:
            return []
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._append, list(events))

    async def read(self, after: int = 0, limit: int = 10_000) -> list[tuple[int, Event]]:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._read, after, limit)

    async def count(self) -> int:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._count)

    async def close(self) -> None:
        def _close() -> None:
            with self._lock:
                self._conn.close()

        await asyncio.get_running_loop().run_in_executor(self._executor, _close)
        self._executor.shutdown(wait=True)


# One round trip, atomic: the id marker and the stream entry are written together or not at all.
_APPEND_LUA = """
local flags = {}
local n = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
for i = 0, n - 1 do
  local b = 3 + i * 5
  if redis.call('SET', KEYS[2] .. ARGV[b], '1', 'NX', 'EX', ttl) then
    redis.call('XADD', KEYS[1], '*', 'event_id', ARGV[b], 'user_id', ARGV[b + 1], 'item_id', ARGV[b + 2],
               'type', ARGV[b + 3], 'timestamp', ARGV[b + 4])
    flags[#flags + 1] = 1
  else
    flags[#flags + 1] = 0
  end
end
return flags
"""


class RedisStreamEventLog:
    """Events in a Redis stream; ``event_id`` markers expire after ``dedupe_ttl_s`` (the idempotency
    window)."""

    def __init__(self, client: Redis, stream: str = "recengine:events", dedupe_ttl_s: int = 7 * 86_400) -> None:
        self.client = client
        self.stream = stream
        self.dedupe_prefix = stream + ":id:"
        self.dedupe_ttl_s = dedupe_ttl_s
        self._script = client.register_script(_APPEND_LUA)

    async def append(self, events: Sequence[Event]) -> list[bool]:
        if not events:
            return []
        args: list[str | int | float] = [len(events), self.dedupe_ttl_s]
        for e in events:
            args += [e.event_id, e.user_id, e.item_id, e.type, repr(float(e.timestamp))]
        try:
            flags = await self._script(keys=[self.stream, self.dedupe_prefix], args=args)
        except REDIS_ERRORS as exc:
            raise StorageUnavailable(f"Redis stream {self.stream}: unavailable ({exc}); nothing stored") from None
        return [bool(f) for f in flags]

    @staticmethod
    def _seq(stream_id: bytes | str) -> int:
        # Stream ids are "<ms>-<n>"; one integer keeps the protocol's ordering (n < 10⁶ per millisecond).
        ms, n = _text(stream_id).split("-")
        return int(ms) * 1_000_000 + int(n)

    async def read(self, after: int = 0, limit: int = 10_000) -> list[tuple[int, Event]]:
        start = "-" if after <= 0 else f"{after // 1_000_000}-{after % 1_000_000 + 1}"
        rows: Any = await self.client.xrange(self.stream, min=start, max="+", count=limit)
        out: list[tuple[int, Event]] = []
        for stream_id, fields in rows or ():
            f = {_text(k): _text(v) for k, v in fields.items()}
            out.append(
                (
                    self._seq(stream_id),
                    Event(f["event_id"], f["user_id"], f["item_id"], f["type"], float(f["timestamp"])),
                )
            )
        return out

    async def count(self) -> int:
        return int(await self.client.xlen(self.stream))

    async def close(self) -> None:
        await self.client.aclose()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
