"""The durable event log: an event is acknowledged only once it is on disk, and ``event_id`` makes retries harmless.

    EventLog (protocol)
    ├── SqliteEventLog        the embedded default: one file, WAL journal, ``synchronous=FULL`` (fsync per commit)
    └── RedisStreamEventLog   a Redis stream shared by replicas; as durable as the server's AOF settings (run Redis
                              with ``appendonly yes`` and ``appendfsync always`` for the same guarantee)

The log stays bounded without losing an event (:class:`Retention`): events are trimmed only once they are merged
into a data set that has been written (the watermark, :mod:`recengine.data.eventlog`), and when too many events
wait to be merged, appends are refused (:class:`~recengine.errors.EventLogFull`, a 503 that clients retry) instead
of anything being evicted. Reading a log back into training data, and moving the watermark, is
:mod:`recengine.data.events`' job.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from redis.asyncio import Redis

from recengine.data.eventlog import (
    DEFAULT_STREAM,
    LUA_PRELUDE,
    REDIS_MARK_LUA,
    REDIS_STATE_LUA,
    LogState,
    new_log_id,
    redis_state,
    sqlite_get,
    sqlite_mark_merged,
    sqlite_max_seq,
    sqlite_prepare,
    sqlite_set,
    sqlite_state,
    state_key,
    stream_id,
    stream_seq,
    text,
)
from recengine.data.events import Event as Event  # re-exported: the event logs store and return these
from recengine.errors import DataError, EventLogFull, StorageUnavailable
from recengine.serving.redis import REDIS_ERRORS

__all__ = ["Event", "EventLog", "LogState", "RedisStreamEventLog", "Retention", "SqliteEventLog"]


@dataclass(frozen=True)
class Retention:
    """What a log keeps (``serving.max_unmerged_events``, ``events_retain_merged_s``, ``events_trim_every``)."""

    max_unmerged: int | None = None
    """Appends that would leave more unmerged events than this are refused; None: no cap."""
    retain_merged_s: float = 0.0
    """Merged events younger than this stay in the log (replay, debugging) before they are trimmed."""
    trim_every: int = 1000
    """The writer trims once per this many events appended."""


@runtime_checkable
class EventLog(Protocol):
    async def append(self, events: Sequence[Event]) -> list[bool]:
        """Store durably; one flag per event: True if new, False if its ``event_id`` was already stored.

        All or nothing: raises :class:`EventLogFull` (nothing stored) when the new events would exceed the cap.
        """
        ...

    async def read(self, after: int = 0, limit: int = 10_000) -> list[tuple[int, Event]]:
        """Events in arrival order with their sequence number, those after ``after`` only."""
        ...

    async def count(self) -> int:
        """Events stored now (merged or not)."""
        ...

    async def state(self) -> LogState: ...

    async def mark_merged(self, seq: int) -> int:
        """Events up to ``seq`` are in a data set that has been written: move the watermark (never backwards)."""
        ...

    async def trim(self, now: float | None = None) -> int:
        """Delete merged events older than the retention window; returns how many. Never an unmerged one."""
        ...

    async def close(self) -> None: ...


class SqliteEventLog:
    """SQLite in WAL mode with ``synchronous=FULL``: a committed event survives a crash or power loss.

    All database work runs on one dedicated thread: writes are serialised (SQLite has one writer anyway) and
    the event loop never waits on an fsync.
    """

    def __init__(self, path: Path, retention: Retention | None = None) -> None:
        self.path = Path(path)
        self.retention = retention or Retention()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="eventlog")
        self._lock = threading.Lock()
        self._closed = False
        self._conn = self._executor.submit(self._open).result()

    def _open(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30.0)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            sqlite_prepare(conn)
        except sqlite3.DatabaseError as exc:
            raise DataError(f"{self.path}: cannot open the event log ({exc})") from None
        return conn

    def _append(self, events: Sequence[Event]) -> list[bool]:
        now = time.time()
        flags: list[bool] = []
        cap = self.retention.max_unmerged
        with self._lock:
            try:
                cur = self._conn.cursor()
                cur.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StorageUnavailable(f"{self.path}: event log unavailable ({exc}); nothing stored") from None
            try:
                before = sqlite_max_seq(self._conn)
                for e in events:
                    cur.execute(
                        "INSERT OR IGNORE INTO events "
                        "(event_id, user_id, item_id, type, timestamp, received) VALUES (?, ?, ?, ?, ?, ?)",
                        (e.event_id, e.user_id, e.item_id, e.type, e.timestamp, now),
                    )
                    flags.append(cur.rowcount == 1)
                after = before + sum(flags)
                unmerged = after - sqlite_get(self._conn, "merged_seq")
                if cap is not None and after > before and unmerged > cap:
                    raise EventLogFull(unmerged - sum(flags), cap, len(events))  # rolled back below
                every = self.retention.trim_every
                if before // every != after // every:
                    # Bounded work per append: a backlog left by a large merge drains over the next appends,
                    # four times faster than they add to it, instead of stalling one request.
                    self._trim_locked(now, max_rows=4 * every)
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

    def _trim_locked(self, now: float, max_rows: int | None = None) -> int:
        """Delete the oldest merged events outside the retention window (inside the caller's transaction), at
        most ``max_rows`` of them.

        The newest row is never deleted: SQLite would number the next event 1 again, under the watermark.
        """
        trimmed = sqlite_get(self._conn, "trimmed_seq")
        limit = min(sqlite_get(self._conn, "merged_seq"), sqlite_max_seq(self._conn) - 1)
        if limit <= trimmed:
            return 0
        # A prefix, like a stream's MINID: up to the first merged event still inside the window.
        young = self._conn.execute(
            "SELECT MIN(seq) FROM events WHERE seq > ? AND seq <= ? AND received >= ?",
            (trimmed, limit, now - self.retention.retain_merged_s),
        ).fetchone()[0]
        threshold = limit if young is None else int(young) - 1
        if max_rows is not None:
            threshold = min(threshold, trimmed + max_rows)
        if threshold <= trimmed:
            return 0
        removed = self._conn.execute("DELETE FROM events WHERE seq > ? AND seq <= ?", (trimmed, threshold)).rowcount
        sqlite_set(self._conn, "trimmed_seq", threshold)
        return int(removed)

    def _trim(self, now: float) -> int:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                removed = self._trim_locked(now)
                self._conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")
                raise
        return removed

    def _read(self, after: int, limit: int) -> list[tuple[int, Event]]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT seq, event_id, user_id, item_id, type, timestamp FROM events WHERE seq > ? "
                "ORDER BY seq LIMIT ?",
                (after, limit),
            ).fetchall()
        return [(int(r[0]), Event(r[1], r[2], r[3], r[4], float(r[5]))) for r in rows]

    def _state(self) -> LogState:
        with self._lock:
            return sqlite_state(self._conn)

    def _mark(self, seq: int) -> int:
        with self._lock:
            return sqlite_mark_merged(self._conn, seq)

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def append(self, events: Sequence[Event]) -> list[bool]:
        if not events:
            return []
        flags: list[bool] = await self._run(self._append, list(events))
        return flags

    async def read(self, after: int = 0, limit: int = 10_000) -> list[tuple[int, Event]]:
        rows: list[tuple[int, Event]] = await self._run(self._read, after, limit)
        return rows

    async def count(self) -> int:
        return (await self.state()).size

    async def state(self) -> LogState:
        state: LogState = await self._run(self._state)
        return state

    async def mark_merged(self, seq: int) -> int:
        merged: int = await self._run(self._mark, seq)
        return merged

    async def trim(self, now: float | None = None) -> int:
        removed: int = await self._run(self._trim, time.time() if now is None else now)
        return removed

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True

        def _close() -> None:
            with self._lock:
                self._conn.close()

        await self._run(_close)
        self._executor.shutdown(wait=True)


# One round trip, atomic: the id markers, the stream entries and the state are written together or not at all;
# a batch that would pass the cap is refused whole, before anything is written.
# KEYS: stream, marker prefix, state. ARGV: log id, n, ttl, cap (-1: none), trim every, now ms, retain ms, then
# (event_id, user_id, item_id, type, timestamp) per event. Returns {1, unmerged, flag...} or {0, unmerged}.
_APPEND_LUA = (
    LUA_PRELUDE
    + """
local stream, prefix, state = KEYS[1], KEYS[2], KEYS[3]
ensure(stream, state, ARGV[1])
local n, ttl, cap, every = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local added = tonumber(redis.call('HGET', state, 'added'))
local merged = tonumber(redis.call('HGET', state, 'merged_n') or '0')
if cap >= 0 then
  local seen, fresh = {}, 0
  for i = 0, n - 1 do
    local id = ARGV[8 + i * 5]
    if not seen[id] then
      seen[id] = true
      if redis.call('EXISTS', prefix .. id) == 0 then fresh = fresh + 1 end
    end
  end
  if fresh > 0 and added - merged + fresh > cap then return {0, added - merged} end
end
local out = {1, 0}
local start = added
for i = 0, n - 1 do
  local b = 8 + i * 5
  if redis.call('SET', prefix .. ARGV[b], '1', 'NX', 'EX', ttl) then
    added = added + 1
    redis.call('XADD', stream, '*', 'event_id', ARGV[b], 'user_id', ARGV[b + 1], 'item_id', ARGV[b + 2],
               'type', ARGV[b + 3], 'timestamp', ARGV[b + 4], 'n', added)
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
if added > start then
  redis.call('HSET', state, 'added', added)
  if math.floor(start / every) ~= math.floor(added / every) then
    trim(stream, state, tonumber(ARGV[6]), tonumber(ARGV[7]))
  end
end
out[2] = added - merged
return out
"""
)

# KEYS: stream, state. ARGV: log id, now ms, retain ms.
_TRIM_LUA = (
    LUA_PRELUDE
    + """
ensure(KEYS[1], KEYS[2], ARGV[1])
return trim(KEYS[1], KEYS[2], tonumber(ARGV[2]), tonumber(ARGV[3]))
"""
)


class RedisStreamEventLog:
    """Events in a Redis stream; ``event_id`` markers expire after ``dedupe_ttl_s`` (the idempotency
    window)."""

    def __init__(
        self,
        client: Redis,
        stream: str = DEFAULT_STREAM,
        dedupe_ttl_s: int = 7 * 86_400,
        retention: Retention | None = None,
    ) -> None:
        self.client = client
        self.stream = stream
        self.dedupe_prefix = stream + ":id:"
        self.state_key = state_key(stream)
        self.dedupe_ttl_s = dedupe_ttl_s
        self.retention = retention or Retention()
        self._append_script = client.register_script(_APPEND_LUA)
        self._state_script = client.register_script(REDIS_STATE_LUA)
        self._mark_script = client.register_script(REDIS_MARK_LUA)
        self._trim_script = client.register_script(_TRIM_LUA)

    def _unavailable(self, exc: BaseException) -> StorageUnavailable:
        return StorageUnavailable(f"Redis stream {self.stream}: unavailable ({exc}); nothing stored")

    async def append(self, events: Sequence[Event]) -> list[bool]:
        if not events:
            return []
        cap = self.retention.max_unmerged
        args: list[str | int | float] = [
            new_log_id(),
            len(events),
            self.dedupe_ttl_s,
            -1 if cap is None else cap,
            self.retention.trim_every,
            int(time.time() * 1000),
            int(self.retention.retain_merged_s * 1000),
        ]
        for e in events:
            args += [e.event_id, e.user_id, e.item_id, e.type, repr(float(e.timestamp))]
        try:
            reply = await self._append_script(keys=[self.stream, self.dedupe_prefix, self.state_key], args=args)
        except REDIS_ERRORS as exc:
            raise self._unavailable(exc) from None
        if not int(reply[0]):
            raise EventLogFull(int(reply[1]), int(cap or 0), len(events))
        return [bool(f) for f in reply[2:]]

    async def read(self, after: int = 0, limit: int = 10_000) -> list[tuple[int, Event]]:
        start = "-" if after <= 0 else stream_id(after + 1)
        rows: Any = await self.client.xrange(self.stream, min=start, max="+", count=limit)
        out: list[tuple[int, Event]] = []
        for sid, fields in rows or ():
            f = {text(k): text(v) for k, v in fields.items()}
            out.append(
                (
                    stream_seq(sid),
                    Event(f["event_id"], f["user_id"], f["item_id"], f["type"], float(f["timestamp"])),
                )
            )
        return out

    async def count(self) -> int:
        return int(await self.client.xlen(self.stream))

    async def _script(self, script: Any, *args: Any) -> Any:
        try:
            return await script(keys=[self.stream, self.state_key], args=[new_log_id(), *args])
        except REDIS_ERRORS as exc:
            raise StorageUnavailable(f"Redis stream {self.stream}: unavailable ({exc})") from None

    async def state(self) -> LogState:
        return redis_state(await self._script(self._state_script))

    async def mark_merged(self, seq: int) -> int:
        if seq <= 0:
            return (await self.state()).merged_up_to
        merged = text(await self._script(self._mark_script, stream_id(seq)))
        return stream_seq(merged) if merged else 0

    async def trim(self, now: float | None = None) -> int:
        now_ms = int((time.time() if now is None else now) * 1000)
        return int(await self._script(self._trim_script, now_ms, int(self.retention.retain_merged_s * 1000)))

    async def close(self) -> None:
        await self.client.aclose()
