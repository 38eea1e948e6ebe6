"""The impression store: what was shown to whom (an impression per answer) and which events it earned (attributions).

    ImpressionStore (protocol)
    ├── MemoryImpressionStore   in process (tests, a single worker without an event store)
    ├── SqliteImpressionStore   the embedded default: a file beside the event log, one writer thread
    └── RedisImpressionStore    shared by every replica (``serving.events_backend = "redis"``)

An impression is one answer: its ``recommendation_id``, the user, the engine and model version that answered, the
experiment and arm that chose the engine, the items in rank order (and, for an interleaved answer, the engine credited
with each item), and the time. An attribution links one event to one impression. Both are kept for
``serving.impressions_retain_s`` and then deleted (the readout covers that window). Nothing here is precious the way
events are: a lost impression costs a readout one row, never a user an answer, so writes are batched and a store that
is down makes the recorder (``serving/attribution.py``) drop a batch, not fail a request.

One contract suite (tests/serving/test_impressions.py) runs against all three.
"""

from __future__ import annotations

import asyncio
import bisect
import sqlite3
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import orjson
from redis.asyncio import Redis

from recengine.errors import ConfigError, DataError, StorageUnavailable
from recengine.serving.redis import REDIS_ERRORS
from recengine.settings import ServingSettings

__all__ = [
    "Attribution",
    "Impression",
    "ImpressionStore",
    "MemoryImpressionStore",
    "RedisImpressionStore",
    "SqliteImpressionStore",
    "open_impression_store",
]

Kind = Literal["rec", "similar"]
How = Literal["id", "window"]


@dataclass(frozen=True)
class Impression:
    recommendation_id: str
    user_id: str | None
    """None for an anonymous or similar-items answer: attributable by its id only."""
    engine: str
    model_version: str
    items: tuple[str, ...]
    """Best first: the item at position i had rank i + 1."""
    timestamp: float
    experiment: str | None = None
    arm: str | None = None
    """The experiment arm (an engine, or ``interleave``); None when no experiment decided the engine."""
    credits: tuple[str, ...] = ()
    """Interleaved answers: the engine that contributed each item (same length as ``items``); else empty."""
    kind: Kind = "rec"
    next_rank: int | None = None
    """Rank in this impression of the user's next event (0: the next event was for an item not shown); None until
    that event arrives. Online HR@K reads it."""

    def rank_of(self, item_id: str) -> int | None:
        try:
            return self.items.index(item_id) + 1
        except ValueError:
            return None

    def credit_of(self, rank: int) -> str:
        """The engine credited with the item at ``rank``."""
        return self.credits[rank - 1] if self.credits else self.engine


@dataclass(frozen=True)
class Attribution:
    """One event credited to one impression."""

    event_id: str
    recommendation_id: str
    user_id: str
    item_id: str
    rank: int
    credit: str
    """The engine that put the item there (the impression's engine, or its interleaving team)."""
    how: How
    """``id``: the event named the recommendation; ``window``: the item was shown to that user shortly before."""
    timestamp: float
    experiment: str | None = None
    arm: str | None = None


@runtime_checkable
class ImpressionStore(Protocol):
    retain_s: float

    async def add(self, impressions: Sequence[Impression]) -> None:
        """Store a batch (an id already stored is left as it is)."""
        ...

    async def get(self, recommendation_id: str) -> Impression | None: ...

    async def recent(self, user_id: str, since: float) -> list[Impression]:
        """The user's impressions at or after ``since``, oldest first."""
        ...

    async def set_next(self, recommendation_id: str, rank: int) -> bool:
        """Record the rank of the user's next event, only if none is recorded yet; True if this call set it."""
        ...

    async def attribute(self, attributions: Sequence[Attribution]) -> list[bool]:
        """Store each attribution once per ``event_id``; one flag per attribution: True if new."""
        ...

    async def scan(self, experiment: str | None) -> tuple[list[Impression], list[Attribution]]:
        """Every retained impression and attribution of ``experiment`` (None: the answers of no experiment)."""
        ...

    async def experiments(self) -> list[str]:
        """Names of the experiments with retained impressions."""
        ...

    async def trim(self, now: float | None = None) -> int:
        """Delete what is older than the retention window; returns the rows removed."""
        ...

    async def close(self) -> None: ...


def _cutoff(retain_s: float, now: float | None) -> float:
    return (time.time() if now is None else now) - retain_s


# ---- in process ------------------------------------------------------------------------------------------------
class MemoryImpressionStore:
    def __init__(self, retain_s: float = 7 * 86_400) -> None:
        self.retain_s = retain_s
        self._by_id: dict[str, Impression] = {}
        self._by_user: dict[str, list[tuple[float, str]]] = {}
        self._attributions: dict[str, Attribution] = {}

    async def add(self, impressions: Sequence[Impression]) -> None:
        for imp in impressions:
            if imp.recommendation_id in self._by_id:
                continue
            self._by_id[imp.recommendation_id] = imp
            if imp.user_id is not None:
                bisect.insort(self._by_user.setdefault(imp.user_id, []), (imp.timestamp, imp.recommendation_id))

    async def get(self, recommendation_id: str) -> Impression | None:
        return self._by_id.get(recommendation_id)

    async def recent(self, user_id: str, since: float) -> list[Impression]:
        rows = self._by_user.get(user_id, [])
        return [self._by_id[rid] for ts, rid in rows if ts >= since and rid in self._by_id]

    async def set_next(self, recommendation_id: str, rank: int) -> bool:
        imp = self._by_id.get(recommendation_id)
        if imp is None or imp.next_rank is not None:
            return False
        self._by_id[recommendation_id] = replace(imp, next_rank=rank)
        return True

    async def attribute(self, attributions: Sequence[Attribution]) -> list[bool]:
        flags = []
        for a in attributions:
            new = a.event_id not in self._attributions
            if new:
                self._attributions[a.event_id] = a
            flags.append(new)
        return flags

    async def scan(self, experiment: str | None) -> tuple[list[Impression], list[Attribution]]:
        imps = sorted((i for i in self._by_id.values() if i.experiment == experiment), key=lambda i: i.timestamp)
        attrs = sorted((a for a in self._attributions.values() if a.experiment == experiment), key=_attr_key)
        return imps, attrs

    async def experiments(self) -> list[str]:
        return sorted({i.experiment for i in self._by_id.values() if i.experiment is not None})

    async def trim(self, now: float | None = None) -> int:
        cutoff = _cutoff(self.retain_s, now)
        old = [rid for rid, imp in self._by_id.items() if imp.timestamp < cutoff]
        for rid in old:
            del self._by_id[rid]
        for user, rows in list(self._by_user.items()):
            kept = [r for r in rows if r[1] in self._by_id]
            if kept:
                self._by_user[user] = kept
            else:
                del self._by_user[user]
        stale = [eid for eid, a in self._attributions.items() if a.timestamp < cutoff]
        for eid in stale:
            del self._attributions[eid]
        return len(old) + len(stale)

    async def close(self) -> None:
        pass


def _attr_key(a: Attribution) -> tuple[float, str]:
    return a.timestamp, a.event_id


# ---- SQLite ----------------------------------------------------------------------------------------------------
_SCHEMA = """
CREATE TABLE IF NOT EXISTS impressions (
    rid TEXT PRIMARY KEY, kind TEXT NOT NULL, user_id TEXT, engine TEXT NOT NULL, model_version TEXT NOT NULL,
    experiment TEXT, arm TEXT, items TEXT NOT NULL, credits TEXT NOT NULL, ts REAL NOT NULL, next_rank INTEGER
);
CREATE INDEX IF NOT EXISTS impressions_user_ts ON impressions (user_id, ts);
CREATE INDEX IF NOT EXISTS impressions_experiment ON impressions (experiment, ts);
CREATE INDEX IF NOT EXISTS impressions_ts ON impressions (ts);
CREATE TABLE IF NOT EXISTS attributions (
    event_id TEXT PRIMARY KEY, rid TEXT NOT NULL, user_id TEXT NOT NULL, item_id TEXT NOT NULL, rank INTEGER NOT NULL,
    credit TEXT NOT NULL, how TEXT NOT NULL, ts REAL NOT NULL, experiment TEXT, arm TEXT
);
CREATE INDEX IF NOT EXISTS attributions_experiment ON attributions (experiment, ts);
CREATE INDEX IF NOT EXISTS attributions_ts ON attributions (ts);
"""
_IMP_COLUMNS = "rid, kind, user_id, engine, model_version, experiment, arm, items, credits, ts, next_rank"
_ATTR_COLUMNS = "event_id, rid, user_id, item_id, rank, credit, how, ts, experiment, arm"


def _imp_row(i: Impression) -> tuple[Any, ...]:
    return (
        i.recommendation_id, i.kind, i.user_id, i.engine, i.model_version, i.experiment, i.arm,
        orjson.dumps(i.items).decode(), orjson.dumps(i.credits).decode(), i.timestamp, i.next_rank,
    )  # fmt: skip


def _imp_from(r: Sequence[Any]) -> Impression:
    return Impression(
        recommendation_id=r[0], kind=r[1], user_id=r[2], engine=r[3], model_version=r[4], experiment=r[5], arm=r[6],
        items=tuple(orjson.loads(r[7])), credits=tuple(orjson.loads(r[8])), timestamp=float(r[9]), next_rank=r[10],
    )  # fmt: skip


def _attr_row(a: Attribution) -> tuple[Any, ...]:
    return (
        a.event_id, a.recommendation_id, a.user_id, a.item_id, a.rank, a.credit, a.how, a.timestamp,
        a.experiment, a.arm,
    )  # fmt: skip


def _attr_from(r: Sequence[Any]) -> Attribution:
    return Attribution(
        event_id=r[0], recommendation_id=r[1], user_id=r[2], item_id=r[3], rank=int(r[4]), credit=r[5], how=r[6],
        timestamp=float(r[7]), experiment=r[8], arm=r[9],
    )  # fmt: skip


class SqliteImpressionStore:
    """One file (WAL, ``synchronous=NORMAL``: a crash may lose the last batch, which costs a readout a few rows and
    saves an fsync per batch); all work on one dedicated thread, like the event log."""

    def __init__(self, path: Path, retain_s: float = 7 * 86_400) -> None:
        self.path = Path(path)
        self.retain_s = retain_s
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="impressions")
        self._lock = threading.Lock()
        self._closed = False
        self._conn = self._executor.submit(self._open).result()

    def _open(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30.0)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise DataError(f"{self.path}: cannot open the impression store ({exc})") from None
        return conn

    async def _run(self, fn: Any, *args: Any) -> Any:
        if self._closed:
            raise StorageUnavailable(f"{self.path}: the impression store is closed")

        def locked() -> Any:
            with self._lock:
                try:
                    return fn(*args)
                except sqlite3.Error as exc:
                    raise StorageUnavailable(f"{self.path}: impression store unavailable ({exc})") from None

        return await asyncio.get_running_loop().run_in_executor(self._executor, locked)

    def _write(self, sql: str, rows: list[tuple[Any, ...]]) -> list[bool]:
        cur = self._conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            flags = []
            for row in rows:
                cur.execute(sql, row)
                flags.append(cur.rowcount == 1)
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        return flags

    async def add(self, impressions: Sequence[Impression]) -> None:
        if impressions:
            sql = f"INSERT OR IGNORE INTO impressions ({_IMP_COLUMNS}) VALUES ({', '.join('?' * 11)})"
            await self._run(self._write, sql, [_imp_row(i) for i in impressions])

    async def get(self, recommendation_id: str) -> Impression | None:
        def get() -> Impression | None:
            row = self._conn.execute(
                f"SELECT {_IMP_COLUMNS} FROM impressions WHERE rid = ?", (recommendation_id,)
            ).fetchone()
            return None if row is None else _imp_from(row)

        found: Impression | None = await self._run(get)
        return found

    async def recent(self, user_id: str, since: float) -> list[Impression]:
        def recent() -> list[Impression]:
            rows = self._conn.execute(
                f"SELECT {_IMP_COLUMNS} FROM impressions WHERE user_id = ? AND ts >= ? ORDER BY ts, rid",
                (user_id, since),
            ).fetchall()
            return [_imp_from(r) for r in rows]

        found: list[Impression] = await self._run(recent)
        return found

    async def set_next(self, recommendation_id: str, rank: int) -> bool:
        def set_next() -> bool:
            cur = self._conn.execute(
                "UPDATE impressions SET next_rank = ? WHERE rid = ? AND next_rank IS NULL", (rank, recommendation_id)
            )
            return cur.rowcount == 1

        done: bool = await self._run(set_next)
        return done

    async def attribute(self, attributions: Sequence[Attribution]) -> list[bool]:
        if not attributions:
            return []
        sql = f"INSERT OR IGNORE INTO attributions ({_ATTR_COLUMNS}) VALUES ({', '.join('?' * 10)})"
        flags: list[bool] = await self._run(self._write, sql, [_attr_row(a) for a in attributions])
        return flags

    async def scan(self, experiment: str | None) -> tuple[list[Impression], list[Attribution]]:
        where = "experiment IS NULL" if experiment is None else "experiment = ?"
        args = () if experiment is None else (experiment,)

        def scan() -> tuple[list[Impression], list[Attribution]]:
            imps = self._conn.execute(
                f"SELECT {_IMP_COLUMNS} FROM impressions WHERE {where} ORDER BY ts, rid", args
            ).fetchall()
            attrs = self._conn.execute(
                f"SELECT {_ATTR_COLUMNS} FROM attributions WHERE {where} ORDER BY ts, event_id", args
            ).fetchall()
            return [_imp_from(r) for r in imps], [_attr_from(r) for r in attrs]

        found: tuple[list[Impression], list[Attribution]] = await self._run(scan)
        return found

    async def experiments(self) -> list[str]:
        def names() -> list[str]:
            rows = self._conn.execute(
                "SELECT DISTINCT experiment FROM impressions WHERE experiment IS NOT NULL ORDER BY experiment"
            ).fetchall()
            return [r[0] for r in rows]

        found: list[str] = await self._run(names)
        return found

    async def trim(self, now: float | None = None) -> int:
        cutoff = _cutoff(self.retain_s, now)

        def trim() -> int:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                n = self._conn.execute("DELETE FROM impressions WHERE ts < ?", (cutoff,)).rowcount
                n += self._conn.execute("DELETE FROM attributions WHERE ts < ?", (cutoff,)).rowcount
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            return int(n)

        removed: int = await self._run(trim)
        return removed

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True

        def close() -> None:
            with self._lock:
                self._conn.close()

        await asyncio.get_running_loop().run_in_executor(self._executor, close)
        self._executor.shutdown(wait=True)


# ---- Redis -----------------------------------------------------------------------------------------------------
#: The arm of impressions that belong to no experiment, in the Redis index keys.
_NO_EXPERIMENT = "\x00none"

# KEYS: impression key, user index, experiment index, experiments set. ARGV: rid, json, ts, ttl s, cutoff, user?,
# experiment name. One impression, written with its indexes or not at all; each index trimmed to the retention.
_ADD_LUA = """
if redis.call('SET', KEYS[1], ARGV[2], 'NX', 'EX', ARGV[4]) then
  if ARGV[6] == '1' then
    redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
    redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[5])
    redis.call('EXPIRE', KEYS[2], ARGV[4])
  end
  redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. ARGV[5])
  redis.call('EXPIRE', KEYS[3], ARGV[4])
  redis.call('ZADD', KEYS[4], ARGV[3], ARGV[7])
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', '(' .. ARGV[5])
  redis.call('EXPIRE', KEYS[4], ARGV[4])
  return 1
end
return 0
"""

# KEYS: marker, experiment attribution index. ARGV: json, ts, ttl s, cutoff.
_ATTRIBUTE_LUA = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[3]) then
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[4])
  redis.call('EXPIRE', KEYS[2], ARGV[3])
  return 1
end
return 0
"""


def _imp_json(i: Impression) -> bytes:
    return orjson.dumps(
        {
            "rid": i.recommendation_id, "kind": i.kind, "user": i.user_id, "engine": i.engine,
            "version": i.model_version, "experiment": i.experiment, "arm": i.arm, "items": i.items,
            "credits": i.credits, "ts": i.timestamp,
        }
    )  # fmt: skip


def _imp_from_json(raw: bytes | str, next_rank: Any) -> Impression:
    d = orjson.loads(raw)
    return Impression(
        recommendation_id=d["rid"], kind=d["kind"], user_id=d["user"], engine=d["engine"],
        model_version=d["version"], experiment=d["experiment"], arm=d["arm"], items=tuple(d["items"]),
        credits=tuple(d["credits"]), timestamp=float(d["ts"]), next_rank=None if next_rank is None else int(next_rank),
    )  # fmt: skip


def _attr_json(a: Attribution) -> bytes:
    return orjson.dumps(list(_attr_row(a)))


class RedisImpressionStore:
    """Keys under ``prefix``: ``imp:<rid>`` (the impression, JSON, with a TTL), ``next:<rid>`` (the rank of the
    user's next event, set once), ``user:<id>`` and ``exp:<name>`` (sorted sets of ids by time, trimmed to the
    retention on every write), ``attr:<event_id>`` (an idempotency marker) and ``attrs:<name>`` (the attributions
    of an experiment, JSON members scored by time)."""

    def __init__(self, client: Redis, prefix: str = "recengine:imp", retain_s: float = 7 * 86_400) -> None:
        self.client = client
        self.prefix = prefix
        self.retain_s = retain_s
        self._add = client.register_script(_ADD_LUA)
        self._attribute = client.register_script(_ATTRIBUTE_LUA)

    def _key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def _ttl(self) -> int:
        return max(1, int(self.retain_s) + 1)

    def _unavailable(self, exc: BaseException) -> StorageUnavailable:
        return StorageUnavailable(f"Redis impression store {self.prefix}: unavailable ({exc})")

    async def add(self, impressions: Sequence[Impression]) -> None:
        if not impressions:
            return
        cutoff = repr(_cutoff(self.retain_s, None))
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for i in impressions:
                    exp = i.experiment if i.experiment is not None else _NO_EXPERIMENT
                    keys = [
                        self._key("imp", i.recommendation_id),
                        self._key("user", i.user_id or ""),
                        self._key("exp", exp),
                        self._key("experiments"),
                    ]
                    args: list[str | bytes | int] = [
                        i.recommendation_id, _imp_json(i), repr(i.timestamp), self._ttl(), cutoff,
                        "1" if i.user_id is not None else "0", exp,
                    ]  # fmt: skip
                    await self._add(keys=keys, args=args, client=pipe)
                await pipe.execute()
        except REDIS_ERRORS as exc:
            raise self._unavailable(exc) from None

    async def _load(self, rids: Sequence[Any]) -> list[Impression]:
        out: list[Impression] = []
        for start in range(0, len(rids), 1000):
            chunk = [r.decode() if isinstance(r, bytes) else str(r) for r in rids[start : start + 1000]]
            raws = await self.client.mget([self._key("imp", r) for r in chunk])
            nexts = await self.client.mget([self._key("next", r) for r in chunk])
            out += [_imp_from_json(raw, nxt) for raw, nxt in zip(raws, nexts, strict=True) if raw is not None]
        return out

    async def get(self, recommendation_id: str) -> Impression | None:
        try:
            found = await self._load([recommendation_id])
        except REDIS_ERRORS as exc:
            raise self._unavailable(exc) from None
        return found[0] if found else None

    async def recent(self, user_id: str, since: float) -> list[Impression]:
        try:
            rids = await self.client.zrangebyscore(self._key("user", user_id), repr(since), "+inf")
            found = await self._load(rids)
        except REDIS_ERRORS as exc:
            raise self._unavailable(exc) from None
        return sorted(found, key=lambda i: (i.timestamp, i.recommendation_id))

    async def set_next(self, recommendation_id: str, rank: int) -> bool:
        try:
            if not await self.client.exists(self._key("imp", recommendation_id)):
                return False
            done = await self.client.set(self._key("next", recommendation_id), rank, nx=True, ex=self._ttl())
        except REDIS_ERRORS as exc:
            raise self._unavailable(exc) from None
        return bool(done)

    async def attribute(self, attributions: Sequence[Attribution]) -> list[bool]:
        if not attributions:
            return []
        cutoff = repr(_cutoff(self.retain_s, None))
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for a in attributions:
                    exp = a.experiment if a.experiment is not None else _NO_EXPERIMENT
                    keys = [self._key("attr", a.event_id), self._key("attrs", exp)]
                    args: list[str | bytes | int] = [_attr_json(a), repr(a.timestamp), self._ttl(), cutoff]
                    await self._attribute(keys=keys, args=args, client=pipe)
                replies = await pipe.execute()
        except REDIS_ERRORS as exc:
            raise self._unavailable(exc) from None
        return [bool(int(r)) for r in replies]

    async def scan(self, experiment: str | None) -> tuple[list[Impression], list[Attribution]]:
        exp = experiment if experiment is not None else _NO_EXPERIMENT
        cutoff = repr(_cutoff(self.retain_s, None))
        try:
            rids = await self.client.zrangebyscore(self._key("exp", exp), cutoff, "+inf")
            imps = await self._load(rids)
            raws = await self.client.zrangebyscore(self._key("attrs", exp), cutoff, "+inf")
        except REDIS_ERRORS as exc:
            raise self._unavailable(exc) from None
        attrs = [_attr_from(orjson.loads(r)) for r in raws if isinstance(r, bytes | str)]
        imps.sort(key=lambda i: (i.timestamp, i.recommendation_id))
        attrs.sort(key=_attr_key)
        return imps, attrs

    async def experiments(self) -> list[str]:
        cutoff = repr(_cutoff(self.retain_s, None))
        try:
            names = await self.client.zrangebyscore(self._key("experiments"), cutoff, "+inf")
        except REDIS_ERRORS as exc:
            raise self._unavailable(exc) from None
        decoded = (n.decode() if isinstance(n, bytes) else str(n) for n in names)
        return sorted(n for n in decoded if n != _NO_EXPERIMENT)

    async def trim(self, now: float | None = None) -> int:
        # Impressions and markers expire by TTL, and each index is trimmed when it is written to; this trims the
        # experiment indexes that saw no write lately (an experiment that ended).
        cutoff = "(" + repr(_cutoff(self.retain_s, now))
        removed = 0
        try:
            names = await self.client.zrange(self._key("experiments"), 0, -1)
            for raw in names:
                name = raw.decode() if isinstance(raw, bytes) else str(raw)
                for key in (self._key("exp", name), self._key("attrs", name)):
                    removed += int(await self.client.zremrangebyscore(key, "-inf", cutoff))
            await self.client.zremrangebyscore(self._key("experiments"), "-inf", cutoff)
        except REDIS_ERRORS as exc:
            raise self._unavailable(exc) from None
        return removed

    async def close(self) -> None:
        pass  # the client is shared with the other stores, which close it


def open_impression_store(serving: ServingSettings, redis: Redis | None) -> ImpressionStore:
    """Where the event log is: SQLite beside it, or the Redis that holds the event stream."""
    if serving.events_backend == "redis":
        if redis is None:
            raise ConfigError("serving.events_backend = 'redis' needs cache.redis_url")
        return RedisImpressionStore(redis, retain_s=serving.impressions_retain_s)
    return SqliteImpressionStore(serving.impressions_db_path, serving.impressions_retain_s)
