"""Logged events → training data: the event log that serving writes, read back and merged into a data set.

    log = open_event_log(spec)      a SQLite file, or ``redis://host:port/db[?stream=NAME]`` (a Redis stream)
    merge = merge_events(ds, log)   the data set with the logged events added and split again on the merged
                                    timeline, and how far into the log it goes
    write_merged(merge, out)        the merged data set on disk (fsynced; an existing ``out`` is replaced whole)
    log.mark_merged(merge.up_to)    only now may the log trim those events

Nothing is lost on the way: the watermark moves only once a data set holding the events is on disk, a merge
refuses a data set that lacks events the log has already trimmed, and events that cannot become interactions yet
(a user or item the data set does not know) travel with the data set in ``events_pending.parquet``.

Reading needs nothing from serving (training must not import serving); Redis is imported only to read a stream.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from recengine.data.dataset import TEST, VALID, Dataset, compute_hash, resolve_data_dir
from recengine.data.eventlog import (
    DEFAULT_STREAM,
    REDIS_MARK_LUA,
    REDIS_STATE_LUA,
    LogState,
    new_log_id,
    redis_state,
    sqlite_mark_merged,
    sqlite_prepare,
    sqlite_state,
    state_key,
    stream_id,
    stream_seq,
    text,
)
from recengine.data.splits import leave_one_out, temporal_split
from recengine.errors import DataError

PENDING_FILE = "events_pending.parquet"


@dataclass(frozen=True)
class Event:
    """One logged interaction, as ``POST /events`` received it."""

    event_id: str
    user_id: str
    item_id: str
    type: str
    timestamp: float
    """Seconds since the epoch, UTC."""


# ---- reading a log ---------------------------------------------------------------------------------------------
class EventLogReader(Protocol):
    source: str
    """Where the log is, fit to print (no password)."""

    def state(self) -> LogState: ...

    def read(self) -> Iterator[tuple[int, Event]]:
        """Every stored event with its sequence number, in arrival order."""
        ...

    def mark_merged(self, seq: int) -> int:
        """Events up to ``seq`` are in a data set on disk: move the watermark (never backwards); the new one."""
        ...

    def close(self) -> None: ...


def open_event_log(spec: str | Path) -> EventLogReader:
    """A SQLite event log file, or a Redis stream named by ``redis://`` / ``rediss://`` (``?stream=`` optional)."""
    if isinstance(spec, str) and spec.startswith(("redis://", "rediss://", "unix://")):
        return RedisLogReader(spec)
    return SqliteLogReader(Path(spec))


def read_sqlite_events(path: Path) -> list[Event]:
    """Every event of a SQLite event log, in arrival order, opened read-only."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: event log not found")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = conn.execute(
                "SELECT event_id, user_id, item_id, type, timestamp FROM events ORDER BY seq"
            ).fetchall()
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise DataError(f"{path}: not a recengine event log ({exc})") from None
    return [Event(r[0], r[1], r[2], r[3], float(r[4])) for r in rows]


class SqliteLogReader:
    """The log file that :class:`recengine.serving.events.SqliteEventLog` writes; safe while a server writes it
    (WAL: readers never block the writer, the watermark update waits for the writer's lock)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.source = str(self.path)
        if not self.path.is_file():
            raise DataError(f"{self.path}: event log not found")
        try:
            self._conn = sqlite3.connect(self.path, isolation_level=None, timeout=30.0)
            tables = {r[0] for r in self._conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "events" not in tables:
                self._conn.close()
                raise DataError(f"{self.path}: not a recengine event log (no events table)")
            sqlite_prepare(self._conn)
        except sqlite3.DatabaseError as exc:
            raise DataError(f"{self.path}: not a recengine event log ({exc})") from None

    def state(self) -> LogState:
        return sqlite_state(self._conn)

    def read(self) -> Iterator[tuple[int, Event]]:
        after = 0
        while True:
            rows = self._conn.execute(
                "SELECT seq, event_id, user_id, item_id, type, timestamp FROM events WHERE seq > ? "
                "ORDER BY seq LIMIT 10000",
                (after,),
            ).fetchall()
            if not rows:
                return
            for r in rows:
                yield int(r[0]), Event(r[1], r[2], r[3], r[4], float(r[5]))
            after = int(rows[-1][0])

    def mark_merged(self, seq: int) -> int:
        return sqlite_mark_merged(self._conn, seq)

    def close(self) -> None:
        self._conn.close()


class RedisLogReader:
    """The stream that :class:`recengine.serving.events.RedisStreamEventLog` writes (default ``recengine:events``)."""

    def __init__(self, url: str) -> None:
        import redis

        from recengine.settings import redact_url

        parts = urlsplit(url)
        query = parse_qs(parts.query)
        self.stream = query.pop("stream", [DEFAULT_STREAM])[0]
        self.source = f"{redact_url(urlunsplit(parts._replace(query='')))} stream {self.stream}"
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        self.client = redis.Redis.from_url(
            urlunsplit(parts._replace(query=urlencode(query, doseq=True))), socket_timeout=30.0
        )
        self._state = self.client.register_script(REDIS_STATE_LUA)
        self._mark = self.client.register_script(REDIS_MARK_LUA)

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except self._errors as exc:
            raise DataError(f"{self.source}: cannot read the event log ({exc})") from None

    def state(self) -> LogState:
        keys = [self.stream, state_key(self.stream)]
        return redis_state(self._call(self._state, keys=keys, args=[new_log_id()]))

    def read(self) -> Iterator[tuple[int, Event]]:
        start = "-"
        while True:
            rows = self._call(self.client.xrange, self.stream, min=start, max="+", count=10_000)
            if not rows:
                return
            for sid, fields in rows:
                f = {text(k): text(v) for k, v in fields.items()}
                yield (
                    stream_seq(sid),
                    Event(f["event_id"], f["user_id"], f["item_id"], f["type"], float(f["timestamp"])),
                )
            start = "(" + text(rows[-1][0])

    def mark_merged(self, seq: int) -> int:
        if seq <= 0:
            return self.state().merged_up_to
        keys = [self.stream, state_key(self.stream)]
        merged = text(self._call(self._mark, keys=keys, args=[new_log_id(), stream_id(seq)]))
        return stream_seq(merged) if merged else 0

    def close(self) -> None:
        self.client.close()


# ---- merging -------------------------------------------------------------------------------------------------
@dataclass
class Merge:
    dataset: Dataset
    log_id: str
    up_to: int
    """The log's events up to this sequence number are in ``dataset`` (or in its pending events)."""
    pending: list[Event] = field(default_factory=list)
    """Events of users or items the data set does not know: kept for the next ``recengine data prepare``."""


def merged_up_to(manifest: dict[str, Any], log_id: str) -> int:
    """How far into the log ``log_id`` a data set (its manifest) holds the events; 0 when it holds none."""
    return int(manifest.get("event_logs", {}).get(log_id, 0))


def merged_into(data_dir: Path, log_id: str) -> int:
    """:func:`merged_up_to` for the data set at ``data_dir`` (0 when there is none)."""
    import json

    manifest = resolve_data_dir(Path(data_dir)) / "manifest.json"
    if not manifest.is_file():
        return 0
    try:
        return merged_up_to(json.loads(manifest.read_text()), log_id)
    except (OSError, ValueError, TypeError, AttributeError):
        return 0


def merge_events(dataset: Dataset, log: EventLogReader, *, allow_gap: bool = False, grow: bool = False) -> Merge:
    """The data set with the logged events added, re-split on the merged timeline, for the next training run.

    The rule: an event becomes an interaction (weight 1, its own timestamp, any event type) when both its user and
    its item are in the data set's id maps — the vocabulary every engine shares. With ``grow`` (retraining: every
    model is trained afresh) unknown users and items join the maps after the known ones, whose indices never move,
    and the pending events a data set carries become interactions too; without it, events of new users or items are
    kept as pending events until the next ``recengine data prepare``. An event identical to an existing row (same
    user, item and timestamp) is not added twice. Rows stay sorted by user, then time, ties in input order
    (logged events after the data set's rows).

    The split is then made again over the merged rows, as ``data prepare`` made it (leave-one-out: each user's
    newest interaction is the test item, the one before it the validation item), so no interaction later than a
    user's test item is a training row or part of that user's test history. Appending the events to the train
    split instead would train on the future of every held-out item and report figures that are not held out.

    Refuses (:class:`DataError`) a data set that lacks events the log has already trimmed — they were merged into
    another data set, which is the one to merge into — unless ``allow_gap``.
    """
    from recengine.data.vocab import grow_catalog, grow_ids

    state = log.state()
    before = merged_up_to(dataset.manifest, state.log_id)

    def refuse_a_gap(trimmed_up_to: int) -> None:
        if trimmed_up_to > before and not allow_gap:
            raise DataError(
                f"{log.source}: events up to #{trimmed_up_to} were merged into another data set and trimmed "
                f"from the log, and the data set at {dataset.path} holds this log only up to #{before}: merge into "
                "the latest data set `recengine data merge-events` (or `recengine retrain`) wrote, or pass "
                "--allow-gap to accept the gap"
            )

    refuse_a_gap(state.trimmed_up_to)
    rows = list(log.read())
    # The writer trims while we read: had it trimmed past ``before`` meanwhile, some events were missed.
    refuse_a_gap(log.state().trimmed_up_to)
    up_to = max(before, rows[-1][0] if rows else 0)
    logged = [e for _, e in rows]
    carried = read_pending(dataset.path)
    events = [*carried, *logged] if grow else logged
    users_map, catalog = dataset.users, dataset.items
    if grow:
        users_map = grow_ids(users_map, (e.user_id for e in events))
        catalog = grow_catalog(catalog, (e.item_id for e in events))
    users = users_map.encode(e.user_id for e in events)
    items = catalog.ids.encode(e.item_id for e in events)
    stamps = np.asarray([int(e.timestamp) for e in events], dtype=np.int64)
    keep = (users > 0) & (items > 0) if events else np.zeros(0, dtype=bool)
    existing = set(zip(dataset.user.tolist(), dataset.item.tolist(), dataset.timestamp.tolist(), strict=True))
    new_rows: list[tuple[int, int, int]] = []
    for u, i, t in zip(users[keep].tolist(), items[keep].tolist(), stamps[keep].tolist(), strict=True):
        if (u, i, t) not in existing:
            existing.add((u, i, t))
            new_rows.append((u, i, t))
    pending: dict[str, Event] = {} if grow else {e.event_id: e for e in carried}
    for e, known in zip(events, keep.tolist(), strict=True):
        if not known:
            pending.setdefault(e.event_id, e)
    add = np.asarray(new_rows, dtype=np.int64).reshape(-1, 3)
    user = np.concatenate([dataset.user, add[:, 0].astype(np.int32)])
    item = np.concatenate([dataset.item, add[:, 1].astype(np.int32)])
    timestamp = np.concatenate([dataset.timestamp, add[:, 2]])
    weight = np.concatenate([dataset.weight, np.ones(len(add), dtype=np.float32)])
    order = np.lexsort((timestamp, user))  # stable: equal (user, time) keep input order
    user, timestamp = user[order], timestamp[order]
    merged = Dataset(
        user=user,
        item=item[order],
        timestamp=timestamp,
        weight=weight[order],
        split=resplit(dataset, user, timestamp),
        items=catalog,
        users=users_map,
        manifest={**dataset.manifest},
        path=None,
    )
    merged.manifest["events_merged"] = {
        "source": log.source,
        "log_id": state.log_id,
        "up_to": up_to,
        "n_events": len(logged),
        "n_added": len(add),
        "n_skipped_unknown": int((~keep).sum()),
        "n_pending": len(pending),
        "n_new_users": merged.n_users - dataset.n_users,
        "n_new_items": merged.n_items - dataset.n_items,
        "resplit": merged.manifest.get("split_method", "leave_one_out"),
    }
    merged.manifest["event_logs"] = {**dataset.manifest.get("event_logs", {}), state.log_id: up_to}
    merged.manifest["content_hash"] = compute_hash(merged)
    return Merge(merged, state.log_id, up_to, list(pending.values()))


def resplit(dataset: Dataset, user: np.ndarray, timestamp: np.ndarray) -> np.ndarray:
    """The split of merged rows (sorted by user, then time), made the way ``dataset`` was split: leave-one-out,
    or one global time cut-off per split at the shares of validation and test rows ``dataset`` has."""
    if dataset.manifest.get("split_method", "leave_one_out") == "temporal":
        n = max(1, dataset.n_interactions)
        valid = max(float((dataset.split == VALID).sum()) / n, 1e-6)
        test = max(float((dataset.split == TEST).sum()) / n, 1e-6)
        return temporal_split(timestamp, valid, test)
    return leave_one_out(user)


def merge_event_log(dataset: Dataset, events: str | Path, *, allow_gap: bool = False, grow: bool = False) -> Dataset:
    """:func:`merge_events` from the log at ``events`` (a path or a Redis URL), without moving its watermark."""
    log = open_event_log(events)
    try:
        return merge_events(dataset, log, allow_gap=allow_gap, grow=grow).dataset
    finally:
        log.close()


# ---- writing -------------------------------------------------------------------------------------------------
def read_pending(data_dir: Path | None) -> list[Event]:
    """The pending events a data set directory carries (none when it has no such file)."""
    if data_dir is None or not (Path(data_dir) / PENDING_FILE).is_file():
        return []
    try:
        table = pq.read_table(Path(data_dir) / PENDING_FILE).to_pydict()
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{data_dir}: cannot read {PENDING_FILE}: {exc}") from None
    columns = (table["event_id"], table["user_id"], table["item_id"], table["type"], table["timestamp"])
    return [Event(a, b, c, d, float(t)) for a, b, c, d, t in zip(*columns, strict=True)]


def _write_pending(data_dir: Path, events: list[Event]) -> None:
    table = pa.table(
        {
            "event_id": pa.array([e.event_id for e in events], pa.string()),
            "user_id": pa.array([e.user_id for e in events], pa.string()),
            "item_id": pa.array([e.item_id for e in events], pa.string()),
            "type": pa.array([e.type for e in events], pa.string()),
            "timestamp": pa.array([e.timestamp for e in events], pa.float64()),
        }
    )
    pq.write_table(table, data_dir / PENDING_FILE)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_merged(merge: Merge, out: Path) -> Path:
    """Write the merged data set to ``out`` durably (files and directories fsynced) before anyone moves the
    watermark; an existing data set at ``out`` (the base itself, for an in-place merge) becomes ``out.previous``.
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "manifest.json").is_file())):
        raise DataError(f"{out}: exists and is not a data set; choose another output directory")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(f".{out.name}.merging")
    if staging.exists():
        shutil.rmtree(staging)
    merge.dataset.save(staging)
    if merge.pending:
        _write_pending(staging, merge.pending)
    for entry in staging.iterdir():
        _fsync(entry)
    _fsync(staging)
    if out.exists():
        previous = out.with_name(out.name + ".previous")
        if previous.exists():
            shutil.rmtree(previous)
        os.replace(out, previous)
    os.replace(staging, out)
    _fsync(out.parent)
    merge.dataset.path = out
    return out
