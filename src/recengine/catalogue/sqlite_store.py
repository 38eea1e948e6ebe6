"""The catalogue in SQLite: the embedded default, shared by every worker and replica that opens the same file.

The SQL lives in plain functions on a connection, so that the async store (serving) and the export (training,
which must not import serving) run exactly the same statements.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import sqlite3
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from recengine.catalogue.records import CatalogueItem, decode_body, encode_body
from recengine.catalogue.store import CatalogueVersion, Changes, WriteResult
from recengine.errors import DataError, StorageUnavailable

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS catalogue_items ("
    " item_id TEXT PRIMARY KEY, body BLOB NOT NULL, available INTEGER NOT NULL, version INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS catalogue_items_by_version ON catalogue_items (version)",
    "CREATE TABLE IF NOT EXISTS catalogue_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    "INSERT OR IGNORE INTO catalogue_meta (key, value) VALUES ('version', 0)",
    # The epoch: this file's random name (see CatalogueVersion), made once with the file.
    "INSERT OR IGNORE INTO catalogue_meta (key, value) VALUES ('epoch', ?)",
)


def sqlite_connect(path: Path, *, read_only: bool = False) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), the schema in place unless ``read_only``."""
    try:
        if read_only:
            if not Path(path).is_file():
                raise DataError(f"{path}: no catalogue database there")
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
            conn.execute("SELECT value FROM catalogue_meta WHERE key = 'version'").fetchone()
            return conn
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("BEGIN IMMEDIATE")
        for statement in _SCHEMA:
            conn.execute(statement, (secrets.randbits(62),) if "?" in statement else ())
        conn.execute("COMMIT")
        return conn
    except sqlite3.DatabaseError as exc:
        raise DataError(f"{path}: cannot open the catalogue ({exc})") from None


def sqlite_version(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT value FROM catalogue_meta WHERE key = 'version'").fetchone()
    return int(row[0]) if row else 0


def sqlite_state(conn: sqlite3.Connection) -> CatalogueVersion:
    rows = dict(conn.execute("SELECT key, value FROM catalogue_meta WHERE key IN ('epoch', 'version')").fetchall())
    epoch = rows.get("epoch")
    return CatalogueVersion(f"{int(epoch):016x}" if epoch is not None else "", int(rows.get("version", 0)))


def _row(row: Any) -> CatalogueItem:
    return decode_body(row[0], row[1], bool(row[2]), int(row[3]))


def sqlite_get(conn: sqlite3.Connection, item_id: str) -> CatalogueItem | None:
    row = conn.execute(
        "SELECT item_id, body, available, version FROM catalogue_items WHERE item_id = ?", (item_id,)
    ).fetchone()
    return _row(row) if row else None


def sqlite_changes(conn: sqlite3.Connection, after: int) -> Changes:
    """The version and the records written after ``after``, read in one transaction (one snapshot)."""
    conn.execute("BEGIN")
    try:
        epoch, version = sqlite_state(conn)
        rows = conn.execute(
            "SELECT item_id, body, available, version FROM catalogue_items WHERE version > ? ORDER BY version, item_id",
            (after,),
        ).fetchall()
    finally:
        conn.execute("COMMIT")
    return Changes(epoch, version, [_row(r) for r in rows])


def _write(conn: sqlite3.Connection, fn: Any) -> Any:
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as exc:
        raise StorageUnavailable(f"catalogue unavailable ({exc}); nothing stored") from None
    try:
        out = fn()
        conn.execute("COMMIT")
        return out
    except sqlite3.Error as exc:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise StorageUnavailable(f"catalogue write failed ({exc}); nothing stored") from None
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise


def _next_version(conn: sqlite3.Connection) -> int:
    version = sqlite_version(conn) + 1
    conn.execute("UPDATE catalogue_meta SET value = ? WHERE key = 'version'", (version,))
    return version


def sqlite_put(conn: sqlite3.Connection, items: Sequence[CatalogueItem]) -> WriteResult:
    def run() -> WriteResult:
        if not items:
            return WriteResult(sqlite_version(conn), [])
        version = _next_version(conn)
        created = []
        for item in items:
            exists = conn.execute("SELECT 1 FROM catalogue_items WHERE item_id = ?", (item.item_id,)).fetchone()
            created.append(exists is None)
            conn.execute(
                "INSERT INTO catalogue_items (item_id, body, available, version) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (item_id) DO UPDATE SET body = excluded.body, available = excluded.available, "
                "version = excluded.version",
                (item.item_id, encode_body(item), int(item.available), version),
            )
        return WriteResult(version, created)

    result: WriteResult = _write(conn, run)
    return result


def sqlite_mark_unavailable(
    conn: sqlite3.Connection, item_id: str, fallback: CatalogueItem | None
) -> CatalogueItem | None:
    def run() -> CatalogueItem | None:
        current = sqlite_get(conn, item_id)
        if current is None and fallback is None:
            return None
        if current is not None and not current.available:
            return current
        version = _next_version(conn)
        if current is None:
            assert fallback is not None
            record = fallback.with_version(version, available=False)
            conn.execute(
                "INSERT INTO catalogue_items (item_id, body, available, version) VALUES (?, ?, 0, ?)",
                (item_id, encode_body(record), version),
            )
            return record
        conn.execute("UPDATE catalogue_items SET available = 0, version = ? WHERE item_id = ?", (version, item_id))
        return current.with_version(version, available=False)

    result: CatalogueItem | None = _write(conn, run)
    return result


class SqliteCatalogueStore:
    """The async store over one SQLite file. Writes and bulk reads run on one dedicated thread (SQLite has one
    writer, and the event loop never waits on an fsync); :meth:`version`, asked before every request, runs
    inline on a second connection and costs a ``PRAGMA data_version`` (microseconds) unless another connection
    committed since the last call."""

    backend = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="catalogue")
        self._conn = self._executor.submit(sqlite_connect, self.path).result()
        self._checker = sqlite_connect(self.path)
        self._checker.execute("PRAGMA busy_timeout = 50")
        self._check_lock = threading.Lock()
        self._data_version: int | None = None
        self._version = CatalogueVersion("", 0)
        self._closed = False

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def put(self, items: Sequence[CatalogueItem]) -> WriteResult:
        result: WriteResult = await self._run(sqlite_put, self._conn, list(items))
        return result

    async def get(self, item_id: str) -> CatalogueItem | None:
        item: CatalogueItem | None = await self._run(sqlite_get, self._conn, item_id)
        return item

    async def mark_unavailable(self, item_id: str, fallback: CatalogueItem | None = None) -> CatalogueItem | None:
        item: CatalogueItem | None = await self._run(sqlite_mark_unavailable, self._conn, item_id, fallback)
        return item

    async def version(self) -> CatalogueVersion:
        with self._check_lock:
            try:
                data_version = int(self._checker.execute("PRAGMA data_version").fetchone()[0])
                if data_version != self._data_version:
                    self._version = sqlite_state(self._checker)
                    self._data_version = data_version
            except sqlite3.Error as exc:
                raise StorageUnavailable(f"{self.path}: catalogue unavailable ({exc})") from None
            return self._version

    async def changes(self, after: int = 0) -> Changes:
        changes: Changes = await self._run(sqlite_changes, self._conn, after)
        return changes

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._check_lock:
            self._checker.close()
        await self._run(self._conn.close)
        self._executor.shutdown(wait=True)
