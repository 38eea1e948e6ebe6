"""Merging an event log into training data: which events become train rows, and ``recengine train --events``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from recengine.data.dataset import TEST, TRAIN, VALID, Dataset
from recengine.data.events import Event, merge_event_log, read_sqlite_events
from recengine.errors import DataError

# The logs are written by serving's own writer, so reader and writer are checked against each other.
from recengine.serving.events import SqliteEventLog

pytestmark = pytest.mark.anyio


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
    for code in (VALID, TEST):
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


def test_reading_events_for_training_loads_neither_serving_nor_redis() -> None:
    # Training merges the log through data/; a serving (or Redis) import there would pull the service into training.
    code = (
        "import sys, recengine.data.events; "
        "bad = sorted(m for m in sys.modules if m.startswith(('recengine.serving', 'redis'))); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
