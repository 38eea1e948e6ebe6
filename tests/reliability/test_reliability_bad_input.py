"""Hostile and broken input against the real server: clear 4xx problem documents, nothing stored, no 5xx.

Also a corrupt model artifact pushed and reloaded: refused, and the old version keeps serving.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from recengine.data.events import read_sqlite_events
from recengine.engines.artifact import current_dir, set_current
from tests.reliability import reliability_harness as rh
from tests.reliability.reliability_harness import Deployment

pytestmark = pytest.mark.reliability

MiB = 1024 * 1024
HOSTILE_IDS = [
    "' OR '1'='1",
    "1; DROP TABLE events; --",
    "<script>alert(1)</script>",
    "../../etc/passwd",
    "${jndi:ldap://127.0.0.1/a}",
    "用户🙂",
    "\u202eevil",
    "%00%0d%0a",
    "x" * 256,
]


def stored_events(deployment: Deployment) -> list[Any]:
    path = deployment.root / "events.sqlite3"
    return read_sqlite_events(path) if path.is_file() else []


def assert_problem(response: httpx.Response, status: int | tuple[int, ...]) -> None:
    expected = (status,) if isinstance(status, int) else status
    assert response.status_code in expected, (response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith("application/problem+json"), response.headers
    body = response.json()
    assert body["status"] == response.status_code and body["detail"] and body["request_id"]


@pytest.fixture(scope="module")
def deployment(trained: Deployment, tmp_path_factory: pytest.TempPathFactory) -> Deployment:
    """One private copy for the module: its tests share a server (start-ups dominate the suite's time)."""
    root = tmp_path_factory.mktemp("bad-input")
    shutil.copytree(trained.artifacts_dir, root / "artifacts")
    return Deployment(root, trained.data_dir, root / "artifacts", trained.users, trained.items)


@pytest.fixture(scope="module")
def server(deployment: Deployment) -> Iterator[rh.ServerProcess]:
    port = rh.free_port()
    proc = rh.ServerProcess(rh.serve_command(port), deployment.env(), deployment.root / "server.log", port)
    proc.start()
    try:
        yield proc
    finally:
        proc.kill()
        print(f"---- server log (last lines) ----\n{proc.log_tail(30)}")


def test_hostile_requests_get_clear_4xx_and_store_nothing(server: rh.ServerProcess, deployment: Deployment) -> None:
    user, item = deployment.users[0], deployment.items[0]
    ok_event = {"user_id": user, "item_id": item}
    hostile_ids = {f"hostile-{i}" for i in range(len(HOSTILE_IDS))}
    before = len([e for e in stored_events(deployment) if e.event_id not in hostile_ids])
    rec = "/api/v1/recommendations"
    cases: list[tuple[str, str, dict[str, Any], int | tuple[int, ...]]] = [
        ("GET", rec, {"params": {"user_id": user, "k": 10**12}}, 422),
        ("GET", rec, {"params": {"user_id": user, "k": 0}}, 422),
        ("GET", rec, {"params": {"user_id": user, "k": -5}}, 422),
        ("GET", rec, {"params": {"user_id": user, "k": 101}}, 422),
        ("GET", rec, {"params": {"user_id": user, "k": "ten"}}, 422),
        ("GET", rec, {"params": {"k": 10}}, 422),
        ("GET", rec, {"params": {"user_id": ""}}, 422),
        ("GET", rec, {"params": {"user_id": "   "}}, 422),
        ("GET", rec, {"params": {"user_id": "x" * 257}}, 422),
        ("GET", rec, {"params": {"user_id": user, "engine": "rm -rf"}}, 422),
        ("POST", rec, {"json": {"user_id": user, "k": 10**9}}, 422),
        ("POST", rec, {"json": {"user_id": user, "kk": 3}}, 422),
        ("POST", rec, {"json": {"recent_items": ["i"] * 501}}, 422),
        ("POST", rec, {"json": [1, 2, 3]}, 422),
        ("POST", rec, {"content": b"{not json", "headers": {"content-type": "application/json"}}, 422),
        ("POST", rec, {"content": b"[" * 100_000, "headers": {"content-type": "application/json"}}, (400, 422)),
        ("POST", rec, {"content": b"x" * (2 * MiB), "headers": {"content-type": "application/json"}}, 413),
        ("GET", "/api/v1/items/no-such-item/similar", {"params": {"k": 10}}, 404),
        ("GET", f"/api/v1/items/{item}/similar", {"params": {"k": 10**12}}, 422),
        ("POST", "/api/v1/events", {"json": {**ok_event, "timestamp": -1}}, 422),
        ("POST", "/api/v1/events", {"json": {**ok_event, "timestamp": -86400 * 365 * 30}}, 422),
        ("POST", "/api/v1/events", {"json": {**ok_event, "timestamp": "yesterday"}}, 422),
        ("POST", "/api/v1/events", {"json": {"user_id": user}}, 422),
        ("POST", "/api/v1/events", {"json": {**ok_event, "user_id": ""}}, 422),
        ("POST", "/api/v1/events", {"json": {**ok_event, "type": "DROP TABLE"}}, 422),
        ("POST", "/api/v1/events", {"json": {**ok_event, "event_id": "has space"}}, 422),
        ("POST", "/api/v1/events", {"json": {**ok_event, "event_id": "e" * 129}}, 422),
        ("POST", "/api/v1/events", {"json": {**ok_event, "role": "admin"}}, 422),
        ("POST", "/api/v1/events", {"json": [ok_event] * 1001}, 422),
        # One bad event spoils the batch: none of it is stored.
        ("POST", "/api/v1/events", {"json": [ok_event, ok_event, {**ok_event, "timestamp": -1}]}, 422),
        ("POST", "/api/v1/events", {"json": []}, 422),
        ("POST", "/api/v1/events", {"content": b"", "headers": {"content-type": "application/json"}}, 422),
        ("POST", "/api/v1/events", {"content": b"null", "headers": {"content-type": "application/json"}}, 422),
        ("POST", "/api/v1/events", {"json": [ok_event] * 50_000}, 413),
        ("POST", "/api/v1/events", {"content": iter([b"[" + b" " * MiB] * 2)}, 413),  # chunked, no length
        ("POST", "/api/v1/admin/reload", {}, 401),
        ("POST", "/api/v1/admin/reload", {"headers": {"X-API-Key": "wrong"}}, 403),
    ]
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        for method, url, kwargs, status in cases:
            response = client.request(method, url, **kwargs)
            label = f"{method} {url} {str(kwargs)[:80]}"
            assert response.status_code < 500, label
            try:
                assert_problem(response, status)
            except AssertionError as exc:
                raise AssertionError(f"{label}: {exc}") from None

        after = [e for e in stored_events(deployment) if e.event_id not in hostile_ids]
        assert len(after) == before, "a rejected request stored events"

        # Injection-like but valid ids are opaque strings: a cold-start answer, and stored verbatim.
        for hostile in HOSTILE_IDS:
            response = client.get(rec, params={"user_id": hostile, "k": 5})
            assert response.status_code == 200, (hostile, response.text[:200])
            assert response.json()["user_id"] == hostile and response.json()["items"]
            similar = client.get(f"/api/v1/items/{httpx.URL(path=hostile).raw_path.decode()}/similar")
            assert similar.status_code == 404, (hostile, similar.status_code)
        events = [{"user_id": h, "item_id": h, "event_id": f"hostile-{i}"} for i, h in enumerate(HOSTILE_IDS)]
        assert client.post("/api/v1/events", json=events).json()["accepted"] == len(events)
        stored = {e.event_id: e for e in stored_events(deployment)}
        for event in events:
            assert stored[event["event_id"]].user_id == event["user_id"]

        # Request ids: a sane one is echoed, anything else is replaced.
        assert client.get("/health", headers={"X-Request-ID": "trace-42"}).headers["x-request-id"] == "trace-42"
        replaced = client.get("/health", headers={"X-Request-ID": "x" * 500}).headers["x-request-id"]
        assert replaced and replaced != "x" * 500
        assert client.get("/health").status_code == 200


def _corrupt_copy(current: Path, name: str, how: str) -> Path:
    target = current.parent / name
    shutil.copytree(current, target)
    if how == "weights":
        (target / "weights.safetensors").write_bytes(b"\x00garbage" * 64)
    elif how == "engine":
        config = json.loads((target / "config.json").read_text())
        (target / "config.json").write_text(json.dumps({**config, "engine": "popularity"}))
    elif how == "config":
        (target / "config.json").write_text("{ truncated")
    return target


@pytest.mark.parametrize("how", ["weights", "engine", "config"])
def test_corrupt_artifact_is_refused_and_old_model_keeps_serving(
    server: rh.ServerProcess, deployment: Deployment, how: str
) -> None:
    key = {"X-API-Key": rh.ADMIN_KEY}
    with httpx.Client(base_url=server.base_url, timeout=10) as client:

        def ease_version() -> str:
            engines = client.get("/api/v1/engines").json()["engines"]
            return str(next(e for e in engines if e["name"] == "ease")["model_version"])

        old = ease_version()
        current = current_dir(deployment.artifacts_dir, "ease")
        assert current is not None
        set_current(_corrupt_copy(current, f"corrupt-{how}", how))

        response = client.post("/api/v1/admin/reload", headers=key, json={"engines": ["ease"]})
        assert_problem(response, 409)
        assert "keeps serving" in response.json()["detail"]
        assert ease_version() == old
        answer = client.get("/api/v1/recommendations", params={"user_id": deployment.users[0], "engine": "ease"})
        assert answer.status_code == 200
        assert (answer.json()["engine"], answer.json()["model_version"]) == ("ease", old)
        print(f"[corrupt artifact: {how}] reload → 409: {response.json()['detail'][:160]}")

        # Pointing back at the good version is accepted again.
        set_current(current)
        assert client.post("/api/v1/admin/reload", headers=key).status_code == 200
        assert ease_version() == old


def test_schemathesis_against_the_live_server(server: rh.ServerProcess) -> None:
    """Requests generated from the served /openapi.json, over real HTTP: no 5xx, answers match the schema."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    schema = schemathesis.openapi.from_url(server.base_url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 8
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=10, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
        def run(case: Any) -> None:
            headers = {"X-API-Key": rh.ADMIN_KEY} if case.path.startswith("/api/v1/admin") else None
            case.call_and_validate(base_url=server.base_url, headers=headers, checks=checks)

        run()
    print(f"[schemathesis] {len(operations)} operations × up to 10 generated requests: no 5xx, no schema violation")
