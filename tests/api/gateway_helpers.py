"""Shared assertions and constants for the API tests."""

from __future__ import annotations

from typing import Any

ADMIN_KEY = "test-admin-key-0123456789"
PROBLEM = "application/problem+json"
ITEM_KEYS = {"item_id", "score", "rank"}


def assert_problem(r: Any, status: int, *words: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    body = r.json()
    assert {"type", "title", "status", "detail", "request_id"} <= set(body)
    assert body["status"] == status and body["request_id"] == r.headers["x-request-id"]
    for w in words:
        assert w in body["detail"], body["detail"]
    return body


def assert_answer(body: dict[str, Any], k: int) -> None:
    assert set(body) == {
        "request_id", "recommendation_id", "user_id", "experiment", "engine", "model_version", "fallback", "cached",
        "items", "took_ms",
    }  # fmt: skip
    assert len(body["recommendation_id"]) == 32 and int(body["recommendation_id"], 16) >= 0
    assert len(body["items"]) == k
    assert [i["rank"] for i in body["items"]] == list(range(1, k + 1))
    assert all(set(i) >= ITEM_KEYS for i in body["items"])
    scores = [i["score"] for i in body["items"]]
    assert scores == sorted(scores, reverse=True)
