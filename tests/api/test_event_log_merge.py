"""The event log's life through the API: a full log pushes back (503 + Retry-After, nothing stored), a merge frees it
without losing an acknowledged event (SQLite log and Redis stream), and a restart replays only what the merged data
set lacks."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from typer.testing import CliRunner

from recengine.api.app import create_app
from recengine.cli import app as cli
from recengine.data.dataset import Dataset
from recengine.data.events import read_pending
from recengine.settings import Settings
from tests.api.gateway_helpers import assert_problem

CAP = 6


@pytest.fixture(params=["sqlite", "redis"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[dict[str, Any], str]]:
    """Settings sections for the backend, and the ``--events`` spec that names the same log."""
    if request.param == "sqlite":
        db = tmp_path / "events.sqlite3"
        yield {"serving": {"events_db": str(db)}}, str(db)
        return
    # A database of its own: the cap counts every unmerged event of the stream.
    url = request.getfixturevalue("redis_url").rsplit("/", 1)[0] + "/9"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield {"serving": {"events_backend": "redis"}, "cache": {"redis_url": url}}, url
    client.flushdb()
    client.close()


def refused() -> float:
    return REGISTRY.get_sample_value("recengine_events_total", {"outcome": "refused"}) or 0.0


def test_a_full_log_is_a_503_and_a_merge_frees_it_losing_nothing(
    make_settings: Callable[..., Settings],
    backend: tuple[dict[str, Any], str],
    small_dataset: Dataset,
    known_user: str,
    known_item: str,
    tmp_path: Path,
) -> None:
    sections, spec = backend
    serving = {
        "max_unmerged_events": CAP,
        "max_batch_events": 3,
        "events_trim_every": 3,
        "events_retain_merged_s": 0,
        **sections.pop("serving"),
    }
    settings = make_settings(serving=serving, **sections)
    acked: list[str] = []

    stamps: dict[str, int] = {}

    def post(ids: list[str], user: str = known_user) -> Any:
        events = []
        for i in ids:
            stamps.setdefault(i, 1_700_000_000 + len(stamps))
            events.append({"user_id": user, "item_id": known_item, "event_id": i, "timestamp": stamps[i]})
        return c.post("/api/v1/events", json=events)

    with TestClient(create_app(settings)) as c:
        for n in range(2):
            ids = [f"a{n}-{i}" for i in range(3)]
            assert post(ids).status_code == 200
            acked += ids
        before = refused()
        r = post(["x1", "x2"])
        body = assert_problem(r, 503, "event log full", "serving.max_unmerged_events = 6", "nothing stored")
        assert body["type"].endswith("event-log-full") and r.headers["retry-after"] == "30"
        assert refused() == before + 2
        # A client retrying what was acknowledged is answered: duplicates need no room.
        assert post([acked[0]]).json() == {"accepted": 0, "duplicates": 1, "event_ids": [acked[0]], "attributed": 0}
        log = c.app.state.gateway.stores.events  # type: ignore[attr-defined]
        stored = [e.event_id for _, e in c.portal.call(log.read)]  # type: ignore[union-attr]
        assert stored == acked  # the refused events were not stored, the acknowledged ones all were
        metrics = c.get("/metrics").text
        assert "recengine_event_log_unmerged 6.0" in metrics
        assert "recengine_event_log_unmerged_limit 6.0" in metrics

        # The operator merges (an unknown user's events included: they travel as pending events).
        merged_dir = tmp_path / "merged"
        env = {"RECENGINE_OBSERVABILITY__LOG_LEVEL": "ERROR"}
        done = CliRunner().invoke(
            cli,
            ["data", "merge-events", "--events", spec, "--data", str(small_dataset.path), "-o", str(merged_dir)],
            env=env,
        )
        assert done.exit_code == 0, done.output
        for n in range(2):
            ids = [f"b{n}-{i}" for i in range(3)]
            assert post(ids, user="new-user").status_code == 200
            acked += ids
        left = [e.event_id for _, e in c.portal.call(log.read)]  # type: ignore[union-attr]

    # Trimmed as it went: the merged events left the log ...
    assert left == acked[6:]
    merged = Dataset.load(merged_dir)
    assert merged.n_interactions == small_dataset.n_interactions + 6
    assert merged.manifest["events_merged"]["n_events"] == 6 and read_pending(merged_dir) == []
    # ... and the next merge (into the merged data set, in place) holds every acknowledged event.
    done = CliRunner().invoke(cli, ["data", "merge-events", "--events", spec, "--data", str(merged_dir)], env=env)
    assert done.exit_code == 0, done.output
    again = Dataset.load(merged_dir)
    assert again.n_interactions == merged.n_interactions
    assert [e.event_id for e in read_pending(merged_dir)] == acked[6:]  # a user the data set does not know yet
    assert (tmp_path / "merged.previous" / "manifest.json").is_file()


def history(c: TestClient, user: str) -> list[str]:
    store = c.app.state.gateway.stores.history  # type: ignore[attr-defined]
    return list(c.portal.call(store.get, user).items)  # type: ignore[union-attr]


def merge_in_place(db: Path, data: Path) -> None:
    done = CliRunner().invoke(cli, ["data", "merge-events", "--events", str(db), "--data", str(data)])
    assert done.exit_code == 0, done.output


def test_a_restart_replays_only_the_events_the_merged_data_set_lacks(
    make_settings: Callable[..., Settings], small_dataset: Dataset, known_user: str, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    Dataset.load(small_dataset.path).save(data)
    db = tmp_path / "events.sqlite3"
    settings = make_settings(serving={"events_db": str(db), "events_retain_merged_s": 3600}, data={"dir": str(data)})
    a, b, c_ = small_dataset.items.ids.ids[1:4]
    newest = int(small_dataset.timestamp.max())

    def post(c: TestClient, item: str, dt: int) -> None:
        event = {"user_id": known_user, "item_id": item, "event_id": f"{item}-{dt}", "timestamp": newest + dt}
        assert c.post("/api/v1/events", json=event).status_code == 200

    with TestClient(create_app(settings)) as c:
        before = history(c, known_user)
        post(c, a, 1)
        post(c, b, 2)
    merge_in_place(db, data)  # a and b are now in the data set, and still in the log (retention window)
    with TestClient(create_app(settings)) as c:
        post(c, c_, 3)
    with TestClient(create_app(settings)) as c:
        # The seed holds a and b; the log replays only c — not a and b a second time.
        assert history(c, known_user) == [*before, a, b, c_][-200:]


def test_a_server_whose_data_set_lacks_trimmed_events_says_so(
    make_settings: Callable[..., Settings],
    small_dataset: Dataset,
    known_user: str,
    known_item: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = tmp_path / "data"
    Dataset.load(small_dataset.path).save(data)
    db = tmp_path / "events.sqlite3"
    serving = {"events_db": str(db), "events_retain_merged_s": 0, "events_trim_every": 1}
    event = {"user_id": known_user, "item_id": known_item}
    with TestClient(create_app(make_settings(serving=serving, data={"dir": str(data)}))) as c:
        assert c.post("/api/v1/events", json={**event, "event_id": "m1"}).status_code == 200
        merge_in_place(db, data)
        assert c.post("/api/v1/events", json={**event, "event_id": "m2"}).status_code == 200  # trims m1
    capsys.readouterr()
    stale = make_settings(
        serving=serving, data={"dir": str(tmp_path / "data.previous")}, observability={"log_level": "WARNING"}
    )
    with TestClient(create_app(stale)):
        pass
    err = " ".join(capsys.readouterr().err.split())
    assert "histories miss those events" in err and "merge-events" in err
