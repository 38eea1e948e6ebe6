"""Events survive a restart — a clean one, and a SIGKILL right after the 2xx — and rebuild the histories."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from recengine.api.app import create_app
from recengine.data.dataset import Dataset
from recengine.settings import Settings


def test_events_survive_a_restart_and_shape_the_next_answer(
    make_settings: Callable[..., Settings], known_user: str
) -> None:
    settings = make_settings()
    params = {"user_id": known_user, "k": 3}
    with TestClient(create_app(settings)) as first:
        top = first.get("/api/v1/recommendations", params=params).json()["items"][0]["item_id"]
        r = first.post("/api/v1/events", json={"user_id": known_user, "item_id": top, "event_id": "kept-1"})
        assert r.status_code == 200 and r.json()["attributed"] == 1  # the item was just shown to that user
    with TestClient(create_app(settings)) as second:  # a new process would see the same file
        after = second.get("/api/v1/recommendations", params=params).json()
        assert top not in {i["item_id"] for i in after["items"]}  # the history came back from the log
        retry = second.post("/api/v1/events", json={"user_id": known_user, "item_id": top, "event_id": "kept-1"})
        # The impressions survived the restart too: the retry is attributed as the first delivery was.
        assert retry.json() == {"accepted": 0, "duplicates": 1, "event_ids": ["kept-1"], "attributed": 1}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.reliability
def test_sigkill_after_a_2xx_loses_no_event(trained_artifacts: Path, small_dataset: Dataset, tmp_path: Path) -> None:
    port = _free_port()
    db = tmp_path / "events.sqlite3"
    env = {
        **os.environ,
        "RECENGINE_SERVING__ARTIFACTS_DIR": str(trained_artifacts),
        "RECENGINE_SERVING__EVENTS_DB": str(db),
        "RECENGINE_DATA__DIR": str(small_dataset.path),
        "RECENGINE_OBSERVABILITY__LOG_LEVEL": "WARNING",
    }
    env.pop("RECENGINE_CONFIG", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "recengine.cli", "serve", "--port", str(port), "--host", "127.0.0.1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(base + "/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "server exited"
            assert time.monotonic() < deadline, "server did not become ready"
            time.sleep(0.1)
        acked = []
        for i in range(20):
            r = httpx.post(base + "/api/v1/events", json={"user_id": "u", "item_id": f"i{i}", "event_id": f"k{i}"})
            assert r.status_code == 200
            acked.append(f"k{i}")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    stored = [row[0] for row in sqlite3.connect(db).execute("SELECT event_id FROM events ORDER BY seq")]
    assert stored == acked


def test_serve_without_models_says_how_to_train(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from recengine.cli import app

    env = {"RECENGINE_SERVING__ARTIFACTS_DIR": str(tmp_path / "empty")}
    result = CliRunner().invoke(app, ["serve"], env=env)
    assert result.exit_code != 0
    text = " ".join(result.output.split())
    assert "no trained models" in text and "recengine train --engine popularity" in text


def test_an_event_log_that_cannot_write_is_a_503_and_nothing_is_acknowledged(
    make_settings: Callable[..., Settings],
) -> None:
    from tests.api.gateway_helpers import assert_problem

    with TestClient(create_app(make_settings())) as c:
        log = c.app.state.gateway.stores.events  # type: ignore[attr-defined]
        log._executor.submit(log._conn.close).result()  # the database goes away under the server
        r = c.post("/api/v1/events", json={"user_id": "u", "item_id": "i1"})
        assert_problem(r, 503, "nothing stored")
        assert r.headers["retry-after"] == "1"
