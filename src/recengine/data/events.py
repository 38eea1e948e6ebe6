"""Logged events → training data: the event log that serving writes, read back for the next training run.

The log is the SQLite file of :class:`recengine.serving.events.SqliteEventLog`; reading it needs nothing from serving
(training must not import serving, nor Redis).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recengine.data.dataset import TRAIN, Dataset, compute_hash
from recengine.errors import DataError


@dataclass(frozen=True)
class Event:
    """One logged interaction, as ``POST /events`` received it."""

    event_id: str
    user_id: str
    item_id: str
    type: str
    timestamp: float
    """Seconds since the epoch, UTC."""


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


def merge_event_log(dataset: Dataset, events_path: Path) -> Dataset:
    """The data set with the logged events added to its train split, for the next training run.

    The rule: an event becomes a train interaction (weight 1, its own timestamp, any event type) when both
    its user and its item are in the data set's id maps — the vocabulary every engine shares; events of new
    users or items wait for the next ``recengine data prepare``. An event identical to an existing row (same
    user, item and timestamp) is not added twice. Validation and test rows are untouched, so models stay
    comparable on the same held-out items. Rows stay sorted by user, then time, ties in input order
    (appended events after existing rows).
    """
    events = read_sqlite_events(events_path)
    users = dataset.users.encode(e.user_id for e in events)
    items = dataset.items.ids.encode(e.item_id for e in events)
    stamps = np.asarray([int(e.timestamp) for e in events], dtype=np.int64)
    keep = (users > 0) & (items > 0)
    existing = set(zip(dataset.user.tolist(), dataset.item.tolist(), dataset.timestamp.tolist(), strict=True))
    new_rows: list[tuple[int, int, int]] = []
    for u, i, t in zip(users[keep].tolist(), items[keep].tolist(), stamps[keep].tolist(), strict=True):
        if (u, i, t) not in existing:
            existing.add((u, i, t))
            new_rows.append((u, i, t))
    if not new_rows:
        return dataset
    add = np.asarray(new_rows, dtype=np.int64)
    user = np.concatenate([dataset.user, add[:, 0].astype(np.int32)])
    item = np.concatenate([dataset.item, add[:, 1].astype(np.int32)])
    timestamp = np.concatenate([dataset.timestamp, add[:, 2]])
    weight = np.concatenate([dataset.weight, np.ones(len(add), dtype=np.float32)])
    split = np.concatenate([dataset.split, np.full(len(add), TRAIN, dtype=np.int8)])
    order = np.lexsort((timestamp, user))  # stable: equal (user, time) keep input order
    merged = Dataset(
        user=user[order],
        item=item[order],
        timestamp=timestamp[order],
        weight=weight[order],
        split=split[order],
        items=dataset.items,
        users=dataset.users,
        manifest={**dataset.manifest},
        path=None,
    )
    merged.manifest["events_merged"] = {
        "path": str(events_path),
        "n_events": len(events),
        "n_added": len(add),
        "n_skipped_unknown": int((~keep).sum()),
    }
    merged.manifest["content_hash"] = compute_hash(merged)
    return merged
