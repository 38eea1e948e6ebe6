"""The read routes the console is built on: users, a user's history and routing, an engine's figures, live stats;
and the console's pages, which may call nothing but documented routes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from recengine.data.dataset import Dataset
from recengine.observability.stats import RateTracker, quantile
from tests.api.gateway_helpers import assert_problem

CONSOLE_JS = Path(__file__).resolve().parents[2] / "src" / "recengine" / "console" / "static" / "console.js"


def seeded(dataset: Dataset) -> dict[str, list[str]]:
    seqs = dataset.sequences(max_split=2)
    ids = dataset.items.ids.ids
    return {dataset.users.ids[u]: [ids[i] for i in seqs[u]] for u in range(1, dataset.n_users + 1) if len(seqs[u])}


def test_users_are_listed_searched_and_sampled(client: TestClient, small_dataset: Dataset) -> None:
    users = seeded(small_dataset)
    body = client.get("/api/v1/users", params={"limit": 5}).json()
    assert body["total"] == len(users)
    assert [u["user_id"] for u in body["users"]] == list(users)[:5]
    assert all(u["n_items"] == len(users[u["user_id"]]) for u in body["users"])
    some = list(users)[7]
    needle = some.upper()
    found = client.get("/api/v1/users", params={"query": needle, "limit": 100}).json()
    assert some in [u["user_id"] for u in found["users"]]
    assert all(some.lower() in u["user_id"].lower() for u in found["users"])
    assert found["total"] == sum(some.lower() in u.lower() for u in users)
    sample = client.get("/api/v1/users", params={"random": "true", "limit": 3}).json()
    assert len(sample["users"]) == 3 and {u["user_id"] for u in sample["users"]} <= set(users)
    none = client.get("/api/v1/users", params={"query": "no-such-user-zz"}).json()
    assert none == {"users": [], "total": 0}
    assert_problem(client.get("/api/v1/users", params={"limit": 101}), 422, "less than or equal to 100")


def test_a_users_history_has_titles_in_time_order_and_the_routing(
    client: TestClient, small_dataset: Dataset, known_user: str
) -> None:
    history = seeded(small_dataset)[known_user]
    body = client.get(f"/api/v1/users/{known_user}", params={"limit": 1000}).json()
    assert body["known"] is True and body["n_items"] == len(history)
    assert [h["item_id"] for h in body["history"]] == history
    assert [h["position"] for h in body["history"]] == list(range(len(history)))
    first = small_dataset.items.ids.index(history[0])
    assert body["history"][0]["title"] == small_dataset.items.titles[first]  # type: ignore[index]
    assert body["history"][0]["categories"] == small_dataset.items.categories[first]  # type: ignore[index]
    assert body["routing"]["reason"].startswith("rule:") and body["routing"]["chain"][-1] == "popularity"
    short = client.get(f"/api/v1/users/{known_user}", params={"limit": 3}).json()
    assert [h["item_id"] for h in short["history"]] == history[-3:]  # the newest, oldest first

    item = small_dataset.items.ids.ids[5]
    assert client.post("/api/v1/events", json={"user_id": known_user, "item_id": item}).status_code == 200
    after = client.get(f"/api/v1/users/{known_user}", params={"limit": 1}).json()
    assert after["n_items"] == len(history) + 1 and after["history"][0]["item_id"] == item


def test_an_unknown_user_has_no_history_and_gets_the_floor(client: TestClient) -> None:
    body = client.get("/api/v1/users/nobody-at-all").json()
    assert body["known"] is False and body["n_items"] == 0 and body["history"] == []
    routing = body["routing"]
    assert (routing["engine"], routing["reason"], routing["chain"][0]) == (
        "popularity",
        "rule:no_history",
        "popularity",
    )
    client.post("/api/v1/events", json={"user_id": "nobody-at-all", "item_id": "not-in-any-catalogue"})
    body = client.get("/api/v1/users/nobody-at-all").json()
    assert body["history"] == [
        {"item_id": "not-in-any-catalogue", "position": 0, "title": None, "categories": None, "known": False}
    ]


def test_a_history_item_added_through_the_catalogue_has_its_title(client: TestClient) -> None:
    item = {"title": "Brand New Thing", "categories": ["gadgets"]}
    assert client.put("/api/v1/items/brand-new-1", json=item).status_code == 201
    client.post("/api/v1/events", json={"user_id": "catalogue-fan", "item_id": "brand-new-1"})
    body = client.get("/api/v1/users/catalogue-fan").json()
    assert body["history"] == [
        {"item_id": "brand-new-1", "position": 0, "title": "Brand New Thing", "categories": ["gadgets"], "known": True}
    ]


def test_routing_follows_the_runtime_switches(client: TestClient, known_user: str) -> None:
    from tests.api.gateway_helpers import ADMIN_KEY

    patch = {"routing": {"experiment": {"weights": {"ease": 1.0}}}}
    assert client.patch("/api/v1/admin/config", json=patch, headers={"X-API-Key": ADMIN_KEY}).status_code == 200
    routing = client.get(f"/api/v1/users/{known_user}").json()["routing"]
    assert routing["engine"] == "ease" and routing["reason"].startswith("experiment:")


def test_an_engines_offline_figures(client: TestClient, trained_artifacts: Path) -> None:
    import json

    body = client.get("/api/v1/engines/ease/metrics").json()
    stored = json.loads((trained_artifacts / "ease" / "e1" / "metrics.json").read_text())
    assert body["name"] == "ease" and body["model_version"] == "e1"
    assert body["n_items"] > 0 and body["created"]
    assert set(body["training"]) == {"best_epoch", "epochs_run", "valid_ndcg@10", "seconds_per_epoch", "train_seconds"}
    numeric = {k: v for k, v in stored.get("test", {}).items() if isinstance(v, int | float)}
    assert body["test"] == pytest.approx(numeric)
    assert_problem(client.get("/api/v1/engines/transformer/metrics"), 404, "no transformer model is loaded")
    assert_problem(client.get("/api/v1/engines/nope/metrics"), 422)


def test_the_valid_history_is_read_from_the_artifact(client: TestClient) -> None:
    from recengine.serving.registry import LoadedModel

    model: LoadedModel = client.app.state.gateway.registry.get("popularity")  # type: ignore[attr-defined]
    model.engine.metrics = {
        "best_epoch": 2, "epochs_run": 3, "valid_ndcg@10": 0.25, "train_seconds": 1.5,
        "valid_history": [{"epoch": 0.0, "valid/ndcg@10": 0.2}, {"epoch": 1.0, "valid/ndcg@10": 0.25, "x": "text"},
                          {"epoch": 2.0, "valid/ndcg@10": float("nan")}],
        "test": {"hr@10": 0.5, "split": "test"},
    }  # fmt: skip
    body = client.get("/api/v1/engines/popularity/metrics").json()
    assert body["training"]["best_epoch"] == 2 and body["training"]["valid_ndcg@10"] == 0.25
    assert body["training"]["seconds_per_epoch"] is None
    assert body["valid_history"] == [
        {"epoch": 1, "metrics": {"valid/ndcg@10": 0.2}},
        {"epoch": 2, "metrics": {"valid/ndcg@10": 0.25}},
        {"epoch": 3, "metrics": {}},  # NaN is no figure
    ]
    assert body["test"] == {"hr@10": 0.5}


def _stats(client: TestClient) -> dict[str, Any]:
    r = client.get("/api/v1/stats")
    assert r.status_code == 200
    body: dict[str, Any] = r.json()
    return body


def test_stats_count_requests_cache_hits_and_latency(client: TestClient, known_user: str) -> None:
    before = _stats(client)
    assert before["metrics"] == "enabled"
    for _ in range(3):  # one computed answer, then two cached ones
        assert (
            client.get("/api/v1/recommendations", params={"user_id": known_user, "engine": "ease"}).status_code == 200
        )
    after = _stats(client)
    assert after["requests"]["total"] - before["requests"]["total"] == 3
    assert after["cache"]["hits"] - before["cache"]["hits"] >= 2
    assert 0 < after["cache"]["hit_ratio"] <= 1
    assert after["latency_ms"]["p50"] is not None and after["latency_ms"]["p50"] <= after["latency_ms"]["p99"]
    ease = next(e for e in after["engines"] if e["engine"] == "ease")
    assert ease["requests"] >= 3 and ease["p95_ms"] is not None
    assert after["requests"]["per_s"] > 0 and after["uptime_s"] > 0


def test_stats_without_metrics_say_so(make_settings: Any) -> None:
    from recengine.api.app import create_app

    with TestClient(create_app(make_settings(observability={"metrics": False}))) as c:
        body = _stats(c)
    assert body["metrics"] == "disabled"
    assert body["requests"]["total"] == 0 and body["cache"]["hit_ratio"] is None and body["latency_ms"]["p50"] is None


def test_quantiles_interpolate_inside_a_bucket_like_promql() -> None:
    buckets = {0.01: 0.0, 0.02: 10.0, 0.05: 20.0, float("inf"): 20.0}
    assert quantile(0.5, buckets) == pytest.approx(0.02)
    assert quantile(0.25, buckets) == pytest.approx(0.015)
    assert quantile(0.75, buckets) == pytest.approx(0.035)
    assert quantile(0.5, {0.01: 0.0, float("inf"): 0.0}) is None
    assert quantile(0.99, {0.01: 1.0, float("inf"): 10.0}) == 0.01  # in the +Inf bucket: the last finite bound
    rates = RateTracker(window_s=60)
    assert rates.rate(1_000.0, 0.0) >= 0
    assert rates.rate(1_010.0, 50.0) == pytest.approx(5.0)
    assert rates.rate(1_100.0, 50.0) == 0.0  # older samples fell out of the window: no requests in it


def test_the_console_pages_are_served_and_linked_from_the_root(client: TestClient) -> None:
    root = client.get("/", headers={"accept": "text/html"})
    assert 'href="/ui"' in root.text
    assert client.get("/").json()["links"]["console"] == "/ui"
    for path in ("/ui", "/ui/engines"):
        page = client.get(path)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert '<script src="/ui/static/console.js" defer></script>' in page.text
        assert "http://" not in page.text and "https://" not in page.text  # nothing from elsewhere
        assert "admin-reload" not in page.text  # admin controls are never rendered by the server
    js = client.get("/ui/static/console.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    assert client.get("/ui/static/console.css").headers["content-type"].startswith("text/css")
    assert client.get("/ui/static/nope.js").status_code == 404
    assert "/ui" not in client.get("/openapi.json").json()["paths"]  # pages, not API


def test_the_console_calls_only_documented_routes(client: TestClient) -> None:
    """Every API path in console.js, with its ${…} parts as parameters, is a path of the OpenAPI document."""
    source = CONSOLE_JS.read_text()
    paths = set(re.findall(r"""api\(\s*[`"](/[^`"?]*)""", source))
    paths |= set(re.findall(r"""API \+ "(/[^"?]*)""", source))
    assert {"/users", "/recommendations", "/events", "/engines", "/stats", "/admin/config", "/admin/reload"} <= paths
    documented = client.get("/openapi.json").json()["paths"]
    patterns = [re.compile("^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(p)) + "$") for p in documented]
    for path in paths:
        concrete = "/api/v1" + re.sub(r"\$\{[^}]+\}", "X", path)
        assert any(p.match(concrete) for p in patterns), f"console.js calls {path}, which the API does not document"
    # And with a method the document lists for that path.
    calls = 0
    for found in re.finditer(r"""api\(\s*[`"](/[^`"?]*)""", source):
        window = source[found.end() : found.end() + 200].split("api(")[0]
        method = re.search(r'method: "([A-Z]+)"', window)
        concrete = "/api/v1" + re.sub(r"\$\{[^}]+\}", "X", found.group(1))
        ops = [ops for p, ops in zip(patterns, documented.values(), strict=True) if p.match(concrete)]
        assert any((method.group(1) if method else "GET").lower() in o for o in ops), found.group(0)
        calls += 1
    assert calls >= 15
    assert "fetch(" not in source.replace("fetch(API + ", "")  # no request that bypasses the API prefix


def test_stats_read_every_workers_files_in_multiprocess_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from recengine.observability import stats

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))  # no worker has written anything yet
    snap = stats.collect()
    assert snap.requests == {} and snap.cache == {} and snap.buckets == {}
    summary = stats.summarise(snap, RateTracker())
    assert summary["requests"]["total"] == 0 and summary["latency_ms"] == {"p50": None, "p95": None, "p99": None}
