"""How an event log is stored, and its merge watermark: the SQLite tables and the Redis keys and scripts.

Shared by the writer (:mod:`recengine.serving.events`, asyncio) and by the reader that merges a log into a data set
(:mod:`recengine.data.events`, synchronous), so that both read and move the same watermark; imports neither
serving nor Redis.

Besides its events, every log keeps a small state (:class:`LogState`):

    log_id         random, fixed when the log is created: names the log in a data set's manifest
    merged_up_to   the watermark: every event numbered ≤ it is in a data set that has been written; it only moves
                   forward, and only once that data set is on disk (``recengine data merge-events``)
    trimmed_up_to  events numbered ≤ it may have been deleted; never above the watermark
    unmerged       events after the watermark: what ``serving.max_unmerged_events`` caps

SQLite: table ``events`` (``seq`` is dense: 1, 2, 3, … with a deleted prefix once trimmed) and table ``log_state``
(key → value). Redis: the stream, ``<stream>:id:<event_id>`` idempotency markers and the hash ``<stream>:state``;
each stream entry carries ``n``, its position among all events ever added, so that the number of unmerged events is
one subtraction (``added - merged_n``) instead of a scan.
"""

from __future__ import annotations

import sqlite3
import uuid
from dataclasses import dataclass

DEFAULT_STREAM = "recengine:events"


@dataclass(frozen=True)
class LogState:
    log_id: str
    merged_up_to: int
    """Sequence number of the newest event merged into a written data set (0: none)."""
    trimmed_up_to: int
    """Events numbered ≤ this may be gone from the log (0: none trimmed)."""
    unmerged: int
    size: int
    """Events stored now, merged or not."""


def new_log_id() -> str:
    return uuid.uuid4().hex


# ---- SQLite -------------------------------------------------------------------------------------------------------
SQLITE_SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS events (
    seq       INTEGER PRIMARY KEY,
    event_id  TEXT NOT NULL UNIQUE,
    user_id   TEXT NOT NULL,
    item_id   TEXT NOT NULL,
    type      TEXT NOT NULL,
    timestamp REAL NOT NULL,
    received  REAL NOT NULL
)
""",
    "CREATE TABLE IF NOT EXISTS log_state (key TEXT PRIMARY KEY, value NOT NULL)",
)


def sqlite_prepare(conn: sqlite3.Connection) -> None:
    """Create the tables a log needs (a log written before the state existed gains it: nothing merged yet)."""
    for ddl in SQLITE_SCHEMA:
        conn.execute(ddl)
    conn.execute("INSERT OR IGNORE INTO log_state (key, value) VALUES ('log_id', ?)", (new_log_id(),))


def sqlite_get(conn: sqlite3.Connection, key: str, default: int = 0) -> int:
    row = conn.execute("SELECT value FROM log_state WHERE key = ?", (key,)).fetchone()
    return int(row[0]) if row is not None else default


def sqlite_set(conn: sqlite3.Connection, key: str, value: int) -> None:
    conn.execute("INSERT OR REPLACE INTO log_state (key, value) VALUES (?, ?)", (key, value))


def sqlite_max_seq(conn: sqlite3.Connection) -> int:
    # O(1) on the primary key, and the count of events ever added: a plain INTEGER PRIMARY KEY (no AUTOINCREMENT)
    # spends no number on an ignored duplicate or a rolled-back batch, and trimming never deletes the newest row.
    return int(conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0])


def sqlite_state(conn: sqlite3.Connection) -> LogState:
    row = conn.execute("SELECT value FROM log_state WHERE key = 'log_id'").fetchone()
    newest = sqlite_max_seq(conn)
    merged = sqlite_get(conn, "merged_seq")
    trimmed = sqlite_get(conn, "trimmed_seq")
    return LogState(str(row[0]), merged, trimmed, newest - merged, newest - trimmed)


def sqlite_mark_merged(conn: sqlite3.Connection, seq: int) -> int:
    """Move the watermark forward to ``seq`` (clamped to the newest event; never backwards); the new watermark."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        current = sqlite_get(conn, "merged_seq")
        target = min(int(seq), sqlite_max_seq(conn))
        if target > current:
            sqlite_set(conn, "merged_seq", target)
            current = target
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return current


# ---- Redis --------------------------------------------------------------------------------------------------------
def stream_seq(stream_id: bytes | str) -> int:
    """Stream ids are ``<ms>-<n>``; one integer keeps their order (n < 10⁶ per millisecond)."""
    ms, n = text(stream_id).split("-")
    return int(ms) * 1_000_000 + int(n)


def stream_id(seq: int) -> str:
    return f"{seq // 1_000_000}-{seq % 1_000_000}"


def state_key(stream: str) -> str:
    return stream + ":state"


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


# Prepended to every script. Stream ids are compared as (ms, n) pairs: a Lua number holds the milliseconds
# exactly, but not ms·10⁶ + n, so the integer sequence numbers exist only on the Python side.
LUA_PRELUDE = """
local function parse(id)
  local ms, n = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(n)
end
local function field(fields, name)
  for i = 1, #fields, 2 do
    if fields[i] == name then return fields[i + 1] end
  end
  return nil
end
-- The state hash holds 'log_id' and 'added' from its first write on; after that this only reads (so that reading
-- the state still works while Redis is out of memory). A stream written before the state was kept holds entries
-- without 'n', none of them merged or trimmed: they count as unmerged, in order.
local function ensure(stream, state, log_id)
  if redis.call('HEXISTS', state, 'added') == 1 then return end
  local added = redis.call('XLEN', stream)
  local last = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
  if #last > 0 and field(last[1][2], 'n') then added = tonumber(field(last[1][2], 'n')) end
  redis.call('HSETNX', state, 'log_id', log_id)
  redis.call('HSET', state, 'added', added)
end
-- Delete merged events older than the retention cut-off, never one after the watermark.
local function trim(stream, state, now_ms, retain_ms)
  local wm = redis.call('HGET', state, 'merged_id')
  if not wm then return 0 end
  local ms, n = parse(wm)
  local cut = math.max(now_ms - retain_ms, 0)
  local threshold = string.format('%d-%d', ms, n + 1)
  if cut <= ms then threshold = string.format('%d-0', cut) end
  local removed = redis.call('XTRIM', stream, 'MINID', threshold)
  if removed > 0 then
    local before = redis.call('HGET', state, 'trimmed_below')
    local t_ms, t_n = parse(threshold)
    local b_ms, b_n = 0, 0
    if before then b_ms, b_n = parse(before) end
    if b_ms < t_ms or (b_ms == t_ms and b_n < t_n) then redis.call('HSET', state, 'trimmed_below', threshold) end
  end
  return removed
end
"""

# KEYS: stream, state. ARGV: a log id for a new log.
REDIS_STATE_LUA = (
    LUA_PRELUDE
    + """
ensure(KEYS[1], KEYS[2], ARGV[1])
local h = function(k) return redis.call('HGET', KEYS[2], k) or '' end
return {h('log_id'), h('merged_id'), h('merged_n'), h('added'), h('trimmed_below'), redis.call('XLEN', KEYS[1])}
"""
)

# KEYS: stream, state. ARGV: a log id for a new log, the target stream id. Returns the watermark's id ('' = none).
REDIS_MARK_LUA = (
    LUA_PRELUDE
    + """
ensure(KEYS[1], KEYS[2], ARGV[1])
local current = redis.call('HGET', KEYS[2], 'merged_id')
-- The watermark names a stored event: the newest at or before the target.
local rows = redis.call('XREVRANGE', KEYS[1], ARGV[2], '-', 'COUNT', 1)
if #rows == 0 then return current or '' end
local id = rows[1][1]
if current then
  local a_ms, a_n = parse(id)
  local c_ms, c_n = parse(current)
  if a_ms < c_ms or (a_ms == c_ms and a_n <= c_n) then return current end
end
local n = field(rows[1][2], 'n')
if n then
  n = tonumber(n)
else
  -- An entry written before positions were recorded: count from the current watermark (nothing after it is ever
  -- trimmed, so the count is exact).
  local from = '-'
  if current then from = '(' .. current end
  n = tonumber(redis.call('HGET', KEYS[2], 'merged_n') or '0') + #redis.call('XRANGE', KEYS[1], from, id)
end
redis.call('HSET', KEYS[2], 'merged_id', id, 'merged_n', n)
return id
"""
)


def redis_state(reply: list[bytes | str | int]) -> LogState:
    """The :data:`REDIS_STATE_LUA` reply as a :class:`LogState`."""
    log_id, merged_id, merged_n, added, trimmed_below, size = (text(v) if not isinstance(v, int) else v for v in reply)
    merged = stream_seq(str(merged_id)) if merged_id else 0
    trimmed = stream_seq(str(trimmed_below)) - 1 if trimmed_below else 0
    unmerged = int(added or 0) - int(merged_n or 0)
    return LogState(str(log_id), merged, trimmed, unmerged, int(size))
