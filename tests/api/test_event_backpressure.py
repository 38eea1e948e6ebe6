"""A full event log pushes back through the API (503 + Retry-After, nothing stored), and a merge frees it without
losing an acknowledged event — with the SQLite log and with the Redis stream."""

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
        assert post([acked[0]]).json() == {"accepted": 0, "duplicates": 1, "event_ids": [acked[0]]}
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
