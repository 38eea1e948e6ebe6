"""The published OpenAPI document says exactly what the server accepts (the schemathesis CLI run in
tests/reliability checks the same end to end; these pin each rule down)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.api.gateway_helpers import ADMIN_KEY, assert_problem

ADMIN = {"X-API-Key": ADMIN_KEY}


@pytest.fixture
def schema(client: TestClient) -> dict[str, Any]:
    body: dict[str, Any] = client.get("/openapi.json").json()
    return body


def _k_maximum(node: dict[str, Any]) -> int:
    branches = node.get("anyOf", [node])
    return int(next(b["maximum"] for b in branches if b.get("type") == "integer"))


def test_the_schema_carries_the_configured_k_bound(client: TestClient, schema: dict[str, Any]) -> None:
    max_k = client.app.state.settings.serving.max_k  # type: ignore[attr-defined]
    get = schema["paths"]["/api/v1/recommendations"]["get"]
    assert _k_maximum(next(p for p in get["parameters"] if p["name"] == "k")["schema"]) == max_k
    body = schema["components"]["schemas"]["RecommendBody"]["properties"]["k"]
    assert _k_maximum(body) == max_k
    similar = schema["paths"]["/api/v1/items/{item_id}/similar"]["get"]
    assert _k_maximum(next(p for p in similar["parameters"] if p["name"] == "k")["schema"]) == max_k


def test_the_event_batch_bound_and_the_400_are_documented(client: TestClient, schema: dict[str, Any]) -> None:
    post = schema["paths"]["/api/v1/events"]["post"]
    batch = next(b for b in post["requestBody"]["content"]["application/json"]["schema"]["oneOf"] if "items" in b)
    assert batch["maxItems"] == client.app.state.settings.serving.max_batch_events  # type: ignore[attr-defined]
    for path, method in (("/api/v1/events", "post"), ("/api/v1/recommendations", "post")):
        assert "400" in schema["paths"][path][method]["responses"], path
    # A body that is not even text (invalid UTF-8) is the 400; malformed JSON text is a 422 naming the body.
    r = client.post("/api/v1/recommendations", content=b"\x80\x81", headers={"content-type": "application/json"})
    assert_problem(r, 400)


def test_a_405_names_every_method_of_the_path(client: TestClient) -> None:
    r = client.request("OPTIONS", "/api/v1/admin/config", headers=ADMIN)
    assert r.status_code == 405 and r.headers["allow"] == "GET, PATCH"
    r = client.request("OPTIONS", "/api/v1/recommendations")
    assert r.status_code == 405 and r.headers["allow"] == "GET, POST"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"user_id": "u", "k": "5"}, "body.k"),
        ({"user_id": "u", "k": True}, "body.k"),
        ({"user_id": "u", "exclude_seen": 0}, "body.exclude_seen"),
    ],
)
def test_json_bodies_are_not_coerced(client: TestClient, body: dict[str, Any], field: str) -> None:
    problem = assert_problem(client.post("/api/v1/recommendations", json=body), 422, field)
    assert problem["errors"][0]["field"] == field


def test_an_integral_float_is_an_integer_as_in_json_schema(client: TestClient, known_user: str) -> None:
    r = client.post("/api/v1/recommendations", json={"user_id": known_user, "k": 3.0})
    assert r.status_code == 200 and len(r.json()["items"]) == 3


@pytest.mark.parametrize(
    ("timestamp", "accepted"),
    [
        (946_684_800, True),  # 2000-01-01, the first second allowed
        (4_102_444_799.9999995, True),  # below 2100-01-01 as a number, though it rounds to it as a time
        (4_102_444_800, False),
        ("2099-12-31T23:00:00-05:00", True),  # the year as written
        ("1999-12-31T23:59:59Z", False),
        ("1700000000", False),  # Unix seconds go as a number; a string must be an ISO time
    ],
)
def test_event_timestamps_match_the_schema(client: TestClient, timestamp: object, accepted: bool) -> None:
    r = client.post("/api/v1/events", json={"user_id": "ts-user", "item_id": "i1", "timestamp": timestamp})
    assert (r.status_code == 200) is accepted, r.text
    if not accepted:
        assert_problem(r, 422, "body.timestamp")


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"cache.ttl_s": "5"}, "body.cache.ttl_s"),
        ({"engines": {"ease": {"enabled": 1}}}, "body.engines.ease.enabled"),
        ({"engines": {}}, "body.engines"),
        ({"serving": {"engine_timeout_ms": {}}, "serving.engine_timeout_ms": 20}, "body.serving.engine_timeout_ms"),
    ],
)
def test_runtime_patches_are_typed_like_their_schema(client: TestClient, patch: dict[str, Any], field: str) -> None:
    before = client.get("/api/v1/admin/config", headers=ADMIN).json()["values"]
    problem = assert_problem(client.patch("/api/v1/admin/config", json=patch, headers=ADMIN), 422)
    assert any(e["field"] == field for e in problem["errors"]), problem
    assert client.get("/api/v1/admin/config", headers=ADMIN).json()["values"] == before  # nothing applied


def test_the_patch_schema_lists_exactly_the_runtime_keys(schema: dict[str, Any]) -> None:
    from recengine.settings import RUNTIME_KEYS

    body = schema["paths"]["/api/v1/admin/config"]["patch"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["additionalProperties"] is False and body["minProperties"] == 1
    assert set(RUNTIME_KEYS) <= set(body["properties"])
    assert body["properties"]["cache.ttl_s"]["type"] == "number"
    assert body["properties"]["engines"]["properties"]["ease"]["properties"]["enabled"] == {"type": "boolean"}


def test_the_engine_enum_offers_the_ranker_on_both_recommendation_routes(schema: dict[str, Any]) -> None:
    get = schema["paths"]["/api/v1/recommendations"]["get"]
    param = next(p for p in get["parameters"] if p["name"] == "engine")["schema"]
    body = schema["components"]["schemas"]["RecommendBody"]["properties"]["engine"]
    for node in (param, body):
        enums = [b["enum"] for b in node.get("anyOf", [node]) if "enum" in b]
        assert enums and "ranker" in enums[0], node
