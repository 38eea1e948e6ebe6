"""Each route's contract, including every error case; errors are problem+json and never a 500."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from recengine.data.dataset import Dataset
from tests.api.gateway_helpers import assert_answer, assert_problem


def test_get_recommendations_for_a_known_user(client: TestClient, known_user: str, small_dataset: Dataset) -> None:
    r = client.get("/api/v1/recommendations", params={"user_id": known_user, "k": 5})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    assert_answer(body, 5)
    assert body["user_id"] == known_user and body["engine"] == "ease"
    assert body["model_version"] == "e1" and body["cached"] is False
    # the routing rule wanted the transformer; this deployment has none, and the answer says so
    assert "transformer: no model loaded" in body["fallback"]
    seen = set(small_dataset.items.ids.decode(small_dataset.sequences(max_split=2)[1]))
    assert not seen & {i["item_id"] for i in body["items"]}
    assert all("title" in i and "categories" in i for i in body["items"])


def test_get_twice_is_cached(client: TestClient, known_user: str) -> None:
    params = {"user_id": known_user, "k": 3}
    first, second = (
        client.get("/api/v1/recommendations", params=params),
        client.get("/api/v1/recommendations", params=params),
    )
    assert (first.json()["cached"], second.json()["cached"]) == (False, True)
    assert first.json()["items"] == second.json()["items"]


def test_unknown_user_is_a_cold_start_answer_not_an_error(client: TestClient) -> None:
    r = client.get("/api/v1/recommendations", params={"user_id": "who-is-this", "k": 4})
    assert r.status_code == 200
    assert r.json()["engine"] == "popularity" and r.json()["fallback"] is None
    assert_answer(r.json(), 4)


def test_explicit_engine(client: TestClient, known_user: str) -> None:
    r = client.get("/api/v1/recommendations", params={"user_id": known_user, "engine": "popularity"})
    assert r.json()["engine"] == "popularity" and len(r.json()["items"]) == 10


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"k": 3}, "query.user_id"),
        ({"user_id": "u", "k": 0}, "query.k"),
        ({"user_id": "u", "k": 101}, "query.k"),
        ({"user_id": "u", "k": "ten"}, "query.k"),
        ({"user_id": "u", "engine": "magic"}, "query.engine"),
        ({"user_id": "u", "exclude_seen": "perhaps"}, "query.exclude_seen"),
        ({"user_id": ""}, "query.user_id"),
        ({"user_id": "x" * 300}, "query.user_id"),
    ],
)
def test_get_recommendations_rejects_bad_parameters(client: TestClient, params: dict[str, Any], field: str) -> None:
    body = assert_problem(client.get("/api/v1/recommendations", params=params), 422, field)
    assert body["errors"][0]["field"] == field


def test_post_recommendations_with_session_items_and_filters(client: TestClient, small_dataset: Dataset) -> None:
    items = small_dataset.items.ids.ids[1:4]
    category = small_dataset.items.categories[5][0]  # type: ignore[index]
    r = client.post(
        "/api/v1/recommendations",
        json={"recent_items": items, "k": 5, "include_categories": [category], "exclude_items": [items[0]]},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["user_id"] is None and body["items"]
    assert all(category in i["categories"] for i in body["items"])
    assert not set(items) & {i["item_id"] for i in body["items"]}


def test_post_for_a_user_matches_get(client: TestClient, known_user: str) -> None:
    get = client.get("/api/v1/recommendations", params={"user_id": known_user, "k": 4}).json()
    post = client.post("/api/v1/recommendations", json={"user_id": known_user, "k": 4}).json()
    assert [i["item_id"] for i in get["items"]] == [i["item_id"] for i in post["items"]]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"k": 0}, "body.k"),
        ({"k": 101}, "body.k"),
        ({"user_id": 5}, "body.user_id"),
        ({"recent_items": "i1"}, "body.recent_items"),
        ({"recent_items": [""]}, "body.recent_items[0]"),
        ({"surprise": 1}, "body.surprise"),
        ({"engine": "nope"}, "body.engine"),
        ({"recent_items": ["i"] * 501}, "body.recent_items"),
    ],
)
def test_post_recommendations_rejects_bad_bodies(client: TestClient, body: Any, field: str) -> None:
    assert_problem(client.post("/api/v1/recommendations", json=body), 422, field)


def test_malformed_json_is_a_422(client: TestClient) -> None:
    r = client.post("/api/v1/recommendations", content=b"{not json", headers={"content-type": "application/json"})
    assert_problem(r, 422, "body")


def test_oversized_body_is_a_413(client: TestClient) -> None:
    big = b'{"recent_items": ["' + b"x" * 1_100_000 + b'"]}'
    assert_problem(client.post("/api/v1/recommendations", content=big), 413, "larger than")


def test_oversized_streamed_body_without_length_is_a_413(client: TestClient) -> None:
    def chunks() -> Any:
        for _ in range(20):
            yield b"x" * 100_000

    r = client.post("/api/v1/events", content=chunks())
    assert_problem(r, 413)


def test_similar_items(client: TestClient, known_item: str) -> None:
    r = client.get(f"/api/v1/items/{known_item}/similar", params={"k": 4})
    assert r.status_code == 200
    body = r.json()
    assert body["item_id"] == known_item and body["engine"] == "ease" and len(body["items"]) == 4
    assert known_item not in {i["item_id"] for i in body["items"]}
    assert set(body) == {
        "request_id",
        "recommendation_id",
        "item_id",
        "engine",
        "model_version",
        "fallback",
        "cached",
        "items",
        "took_ms",
    }


def test_similar_items_errors(client: TestClient, known_item: str) -> None:
    assert_problem(client.get("/api/v1/items/no-such-item/similar"), 404, "no-such-item")
    assert_problem(client.get(f"/api/v1/items/{known_item}/similar", params={"k": 0}), 422, "query.k")
    assert_problem(client.get(f"/api/v1/items/{known_item}/similar", params={"k": 500}), 422, "query.k")


def test_events_single_and_batch_and_idempotent(client: TestClient, known_user: str, known_item: str) -> None:
    one = client.post("/api/v1/events", json={"user_id": known_user, "item_id": known_item, "event_id": "ev-1"})
    assert one.status_code == 200 and one.json() == {
        "accepted": 1,
        "duplicates": 0,
        "event_ids": ["ev-1"],
        "attributed": 0,
    }
    batch = client.post(
        "/api/v1/events",
        json=[
            {"user_id": known_user, "item_id": known_item, "event_id": "ev-1"},
            {
                "user_id": "u-new",
                "item_id": known_item,
                "type": "purchase",
                "timestamp": "2024-05-01T10:00:00Z",
            },
            {"user_id": "u-new", "item_id": known_item, "timestamp": 1_714_557_600},
        ],
    )
    assert batch.status_code == 200
    assert (batch.json()["accepted"], batch.json()["duplicates"]) == (2, 1)
    assert len(set(batch.json()["event_ids"])) == 3


def test_an_event_changes_the_next_recommendation(client: TestClient, known_user: str) -> None:
    params = {"user_id": known_user, "k": 3}
    before = client.get("/api/v1/recommendations", params=params).json()
    top = before["items"][0]["item_id"]
    client.post("/api/v1/events", json={"user_id": known_user, "item_id": top})
    after = client.get("/api/v1/recommendations", params=params).json()
    assert after["cached"] is False
    assert top not in {i["item_id"] for i in after["items"]}  # now seen, so excluded


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"item_id": "i1"}, "body.user_id"),
        ([{"user_id": "u", "item_id": "i1"}, {"user_id": "u"}], "body[1].item_id"),
        ({"user_id": "u", "item_id": "i1", "type": "Not A Type"}, "body.type"),
        ({"user_id": "u", "item_id": "i1", "timestamp": 631_152_000}, "body.timestamp"),
        ({"user_id": "u", "item_id": "i1", "timestamp": "yesterday"}, "body.timestamp"),
        ({"user_id": "u", "item_id": "i1", "event_id": "has space"}, "body.event_id"),
        ({"user_id": "u", "item_id": "i1", "extra": True}, "body.extra"),
        ([], "body"),
        ("just a string", "body"),
    ],
)
def test_events_reject_bad_input(client: TestClient, body: Any, field: str) -> None:
    assert_problem(client.post("/api/v1/events", json=body), 422, field)


def test_events_reject_empty_and_invalid_json_and_huge_batches(client: TestClient) -> None:
    assert_problem(client.post("/api/v1/events", content=b""), 422, "body")
    assert_problem(client.post("/api/v1/events", content=b"[{"), 422, "invalid JSON")
    many = [{"user_id": "u", "item_id": "i"}] * 1001
    assert_problem(client.post("/api/v1/events", json=many), 422, "at most 1000")


def test_engines(client: TestClient) -> None:
    engines = {e["name"]: e for e in client.get("/api/v1/engines").json()["engines"]}
    assert set(engines) == {"popularity", "ease", "transformer", "neural", "ranker"}
    assert engines["ease"]["loaded"] and engines["ease"]["model_version"] == "e1"
    assert engines["ease"]["circuit"] == "closed" and engines["ease"]["health"] == "ok"
    assert not engines["transformer"]["loaded"] and engines["transformer"]["health"] == "not_loaded"


def test_health_and_ready(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready").json()
    assert ready == {
        "status": "ready", "models": {"popularity": "p1", "ease": "e1"}, "cache": "memory", "redis": "not configured"
    }  # fmt: skip


def test_unknown_route_and_wrong_method_are_problems(client: TestClient) -> None:
    assert_problem(client.get("/api/v1/nothing"), 404, "/api/v1/nothing")
    assert_problem(client.delete("/api/v1/recommendations"), 405)


def test_request_id_is_echoed_when_sane_and_replaced_when_not(client: TestClient) -> None:
    r = client.get("/health", headers={"X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    r2 = client.get("/health", headers={"X-Request-ID": "bad id\twith spaces"})
    assert r2.headers["x-request-id"] != "bad id\twith spaces" and len(r2.headers["x-request-id"]) == 32
    rec = client.get("/api/v1/recommendations", params={"user_id": "u"}, headers={"X-Request-ID": "trace-9"})
    assert rec.json()["request_id"] == "trace-9"


def test_metrics_route_exposes_the_gateway_series(client: TestClient, known_user: str) -> None:
    client.get("/api/v1/recommendations", params={"user_id": known_user})
    text = client.get("/metrics").text
    assert 'recengine_requests_total{engine="ease",route="/api/v1/recommendations",status="200"}' in text
    assert "recengine_cache_lookups_total" in text and "recengine_model_info" in text


def test_openapi_documents_problems(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    op = spec["paths"]["/api/v1/recommendations"]["get"]
    assert "application/problem+json" in op["responses"]["422"]["content"]
    assert "Problem" in spec["components"]["schemas"]
    assert client.get("/docs").status_code == 200


def test_event_metrics_count_accepted_and_rejected(client: TestClient) -> None:
    import re

    def counts() -> dict[str, float]:
        text = client.get("/metrics").text
        return {k: float(v) for k, v in re.findall(r'recengine_events_total\{outcome="(\w+)"\} ([\d.]+)', text)}

    before = counts()
    client.post("/api/v1/events", json=[{"user_id": "m", "item_id": "i1"}, {"user_id": "m", "item_id": "i2"}])
    client.post("/api/v1/events", json=[{"user_id": "m"}, {"item_id": "x"}, {"user_id": "m", "item_id": "ok"}])
    client.post("/api/v1/events", json={"user_id": "", "item_id": ""})
    after = counts()
    assert after.get("accepted", 0) - before.get("accepted", 0) == 2
    assert after.get("rejected", 0) - before.get("rejected", 0) == 3  # two bad list entries, one bad single event


def test_root_links_to_docs_health_and_metrics(client: TestClient) -> None:
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    links = r.json()["links"]
    assert {"docs", "ready", "metrics", "health", "engines"} <= set(links)
    for path in (links["docs"], links["ready"], links["health"], links["engines"]):
        assert client.get(path).status_code == 200, path


def test_root_is_a_page_for_a_browser(client: TestClient) -> None:
    r = client.get("/", headers={"accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    for path in ("/docs", "/ready", "/metrics"):
        assert f'href="{path}"' in r.text
