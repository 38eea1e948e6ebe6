"""Merging an event log into training data: which events become rows, how the merged timeline is split again, and
``recengine train --events``."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from recengine.data.dataset import TEST, TRAIN, VALID, Dataset
from recengine.data.events import Event, merge_event_log, merge_events, read_pending, read_sqlite_events
from recengine.errors import DataError

# The logs are written by serving's own writer, so reader and writer are checked against each other.
from recengine.serving.events import EventLog, RedisStreamEventLog, Retention, SqliteEventLog
from recengine.serving.redis import redis_client

pytestmark = pytest.mark.anyio


def test_a_file_that_is_not_a_log_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.sqlite3"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(DataError, match=r"bad\.sqlite3"):
        read_sqlite_events(bad)
    with pytest.raises(DataError, match="not found"):
        read_sqlite_events(tmp_path / "missing.sqlite3")


async def test_merge_adds_known_pairs_and_splits_the_merged_timeline_again(
    small_dataset: Dataset, tmp_path: Path
) -> None:
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
    assert merged.manifest["events_merged"]["resplit"] == "leave_one_out"
    assert merged.content_hash != ds.content_hash
    # Still one valid and one test row per user; this user's are now the two newest events (not train rows after
    # its old held-out items, which would train on the future), and its old held-out items are train rows.
    for code in (VALID, TEST):
        assert (merged.split == code).sum() == (ds.split == code).sum()
    u = ds.users.index(user)
    rows = merged.user == u
    assert list(merged.item[rows & (merged.split == VALID)]) == [5]
    assert list(merged.item[rows & (merged.split == TEST)]) == [5]
    old = ds.user == u
    assert list(merged.sequences(max_split=TRAIN)[u]) == list(ds.item[old])
    # still sorted by user, then time
    assert np.all(np.diff(merged.user) >= 0)
    same_user = np.diff(merged.user) == 0
    assert np.all(np.diff(merged.timestamp)[same_user] >= 0)
    # merging the same log twice adds nothing more
    again = merge_event_log(merged, tmp_path / "ev.sqlite3")
    assert again.n_interactions == merged.n_interactions
    assert np.array_equal(again.split, merged.split)


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
    before = Popularity.load(tmp_path / "plain").counts
    after = Popularity.load(tmp_path / "merged").counts
    # Each of the 40 users gains one row; the split moves along, so the train split gains one row per user (the
    # events themselves are those users' test items now, not training rows).
    assert after.sum() - before.sum() == 40
    merged_ds = merge_event_log(small_dataset, tmp_path / "ev.sqlite3")
    assert after[7] == merged_ds.item_counts(max_split=TRAIN)[7]


def test_reading_events_for_training_loads_neither_serving_nor_redis() -> None:
    # Training merges the log through data/; a serving (or Redis) import there would pull the service into training.
    code = (
        "import sys, recengine.data.events; "
        "bad = sorted(m for m in sys.modules if m.startswith(('recengine.serving', 'redis'))); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


# ---- either backend; the watermark moves only once the merged data set is on disk --------------------------------
@pytest.fixture(params=["sqlite", "redis"])
async def event_log(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[EventLog, str]]:
    """A log that serving writes, and the ``--events`` spec that names it."""
    if request.param == "sqlite":
        db = tmp_path / "ev.sqlite3"
        writer: EventLog = SqliteEventLog(db, Retention(trim_every=1))
        yield writer, str(db)
        await writer.close()
        return
    url = request.getfixturevalue("redis_url")
    stream = f"test:events:{uuid.uuid4().hex}"
    writer = RedisStreamEventLog(redis_client(url, 1000), stream=stream, retention=Retention(trim_every=1))
    yield writer, f"{url}?stream={stream}"
    await writer.client.delete(*await writer.client.keys(stream + "*"))
    await writer.close()


def merge_cli(*args: str) -> Any:
    from typer.testing import CliRunner

    from recengine.cli import app

    return CliRunner().invoke(app, ["data", "merge-events", *args], env={"RECENGINE_OBSERVABILITY__LOG_LEVEL": "ERROR"})


async def test_either_backend_merges_known_pairs_and_keeps_the_rest_pending(
    small_dataset: Dataset, event_log: tuple[EventLog, str]
) -> None:
    writer, spec = event_log
    ds = small_dataset
    user, item = ds.users.ids[3], ds.items.ids.ids[5]
    newest = int(ds.timestamp.max())
    await writer.append(
        [
            Event("a", user, item, "view", newest + 10),
            Event("b", user, item, "purchase", newest + 20),
            Event("c", "unknown-user", item, "view", newest + 30),
        ]
    )
    merged = merge_event_log(ds, spec)
    info = merged.manifest["events_merged"]
    assert (info["n_added"], info["n_skipped_unknown"], info["n_pending"]) == (2, 1, 1)
    assert merged.n_interactions == ds.n_interactions + 2
    assert info["up_to"] == merged.manifest["event_logs"][info["log_id"]] == (await writer.read())[-1][0]
    assert "password" not in info["source"]
    assert (await writer.state()).merged_up_to == 0  # merging in memory (train --events) moves no watermark


async def test_merge_events_writes_the_data_set_then_lets_the_log_trim_it(
    small_dataset: Dataset, event_log: tuple[EventLog, str], tmp_path: Path
) -> None:
    writer, spec = event_log
    base = tmp_path / "data"
    Dataset.load(small_dataset.path).save(base)
    users, item = small_dataset.users.ids[1:21], small_dataset.items.ids.ids[7]
    newest = int(small_dataset.timestamp.max())
    await writer.append([Event(f"k{i}", u, item, "view", newest + i) for i, u in enumerate(users)])
    await writer.append([Event("new", "a-new-user", item, "view", newest + 100)])
    last = (await writer.read())[-1][0]

    done = merge_cli("--events", spec, "--data", str(base))  # in place: the old one becomes data.previous
    assert done.exit_code == 0, done.output
    merged = Dataset.load(base)
    assert merged.n_interactions == small_dataset.n_interactions + 20
    assert [e.event_id for e in read_pending(base)] == ["new"]
    assert Dataset.load(tmp_path / "data.previous").n_interactions == small_dataset.n_interactions
    state = await writer.state()
    assert (state.merged_up_to, state.unmerged) == (last, 0)
    assert merged.manifest["event_logs"] == {state.log_id: last}

    # The writer may now trim everything merged; the data set holds it all.
    await writer.append([Event("later", users[0], item, "view", newest + 200)])
    await writer.trim()
    assert [e.event_id for _, e in await writer.read()] == ["later"]

    # A data set without the trimmed events is refused: merging into it would silently drop them.
    refused = merge_cli("--events", spec, "--data", str(tmp_path / "data.previous"), "-o", str(tmp_path / "bad"))
    assert refused.exit_code == 2 and "trimmed" in " ".join(refused.output.split())
    assert not (tmp_path / "bad").exists()
    with pytest.raises(DataError, match="trimmed"):
        merge_event_log(small_dataset, spec)
    gap = merge_event_log(small_dataset, spec, allow_gap=True)  # the operator's explicit choice
    assert gap.manifest["events_merged"]["n_added"] == 1

    # Merging into the latest data set goes on from where it stopped, the pending event carried along.
    again = merge_cli("--events", spec, "--data", str(base))
    assert again.exit_code == 0, again.output
    assert Dataset.load(base).n_interactions == merged.n_interactions + 1
    assert [e.event_id for e in read_pending(base)] == ["new"]


async def test_the_watermark_stays_when_the_data_set_cannot_be_written(
    small_dataset: Dataset, event_log: tuple[EventLog, str], tmp_path: Path
) -> None:
    writer, spec = event_log
    await writer.append([Event("e1", small_dataset.users.ids[1], small_dataset.items.ids.ids[1], "view", 1.7e9)])
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("not a data set")
    done = merge_cli("--events", spec, "--data", str(small_dataset.path), "-o", str(occupied))
    assert done.exit_code == 2 and "not a data set" in done.output
    assert (occupied / "notes.txt").read_text() == "not a data set"
    assert (await writer.state()).merged_up_to == 0
    await writer.append([Event("e2", "u", "i", "view", 1.7e9)])
    assert [e.event_id for _, e in await writer.read()] == ["e1", "e2"]  # nothing trimmed


async def test_train_with_events_reads_a_redis_stream(small_dataset: Dataset, redis_url: str, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from recengine.cli import app
    from recengine.engines.popularity import Popularity

    stream = f"test:events:{uuid.uuid4().hex}"
    writer = RedisStreamEventLog(redis_client(redis_url, 1000), stream=stream)
    item = small_dataset.items.ids.ids[7]
    newest = int(small_dataset.timestamp.max())
    try:
        await writer.append(
            [Event(f"t{i}", u, item, "view", newest + i) for i, u in enumerate(small_dataset.users.ids[1:31])]
        )
        env = {"RECENGINE_SERVING__ARTIFACTS_DIR": str(tmp_path / "art")}
        args = ["train", "--engine", "popularity", "--data", str(small_dataset.path)]
        plain = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "plain")], env=env)
        merged = CliRunner().invoke(
            app, [*args, "-o", str(tmp_path / "merged"), "--events", f"{redis_url}?stream={stream}"], env=env
        )
        assert plain.exit_code == 0 and merged.exit_code == 0, merged.output
        after, before = Popularity.load(tmp_path / "merged").counts, Popularity.load(tmp_path / "plain").counts
        assert after.sum() - before.sum() == 30  # one more train row per user: the split moved along
    finally:
        await writer.client.delete(*await writer.client.keys(stream + "*"))
        await writer.close()


def test_a_trim_during_the_read_that_passes_the_data_set_is_refused(small_dataset: Dataset) -> None:
    # The writer trims while a merge reads: if it trimmed events the data set does not hold, the merge missed them.
    from recengine.data.eventlog import LogState

    class TrimmedMidRead:
        source = "fake log"

        def __init__(self) -> None:
            self.states = [LogState("L", 5, 0, 5, 10), LogState("L", 8, 8, 2, 2)]

        def state(self) -> LogState:
            return self.states.pop(0) if len(self.states) > 1 else self.states[0]

        def read(self) -> Iterator[tuple[int, Event]]:
            yield 9, Event("e9", small_dataset.users.ids[1], small_dataset.items.ids.ids[1], "view", 1.7e9)

        def mark_merged(self, seq: int) -> int:
            raise AssertionError("a refused merge moves no watermark")

        def close(self) -> None:
            pass

    with pytest.raises(DataError, match=r"up to #8 .* only up to #0"):
        merge_events(small_dataset, TrimmedMidRead())
    assert merge_events(small_dataset, TrimmedMidRead(), allow_gap=True).up_to == 9
