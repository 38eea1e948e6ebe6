"""Admin routes: the key check (404 disabled / 401 missing / 403 wrong), hot reload, runtime config."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from recengine.api.app import create_app
from recengine.data.dataset import Dataset
from recengine.engines.artifact import set_current, version_dir
from recengine.engines.popularity import Popularity
from recengine.settings import Settings
from tests.api.gateway_helpers import ADMIN_KEY, assert_problem

AUTH = {"X-API-Key": ADMIN_KEY}


def test_admin_disabled_without_a_configured_key(make_settings: Callable[..., Settings]) -> None:
    with TestClient(create_app(make_settings(serving={"admin_api_key": None}))) as c:
        for r in (
            c.post("/api/v1/admin/reload", headers=AUTH),
            c.get("/api/v1/admin/config", headers=AUTH),
            c.patch("/api/v1/admin/config", headers=AUTH, json={"cache.ttl_s": 1}),
        ):
            assert_problem(r, 404, "admin API is disabled")


@pytest.mark.parametrize(("method", "path"), [("post", "/api/v1/admin/reload"), ("get", "/api/v1/admin/config")])
def test_missing_key_is_401_and_wrong_key_is_403(client: TestClient, method: str, path: str) -> None:
    r = client.request(method, path)
    assert_problem(r, 401, "X-API-Key")
    assert r.headers["www-authenticate"] == "X-API-Key"
    assert_problem(client.request(method, path, headers={"X-API-Key": "wrong"}), 403)
    assert_problem(client.request(method, path, headers={"X-API-Key": ADMIN_KEY + "x"}), 403)
    assert_problem(client.request(method, path, headers={"X-API-Key": ""}), 403)


def test_get_config_lists_the_runtime_keys(client: TestClient) -> None:
    body = client.get("/api/v1/admin/config", headers=AUTH).json()
    assert body["values"]["routing.short_history"] == 5
    assert body["values"]["engines.ease.enabled"] is True
    assert set(body["values"]) == set(body["changeable"])


def test_patch_config_changes_routing_at_once(client: TestClient, known_user: str) -> None:
    params = {"user_id": known_user, "k": 3}
    assert client.get("/api/v1/recommendations", params=params).json()["engine"] == "ease"
    r = client.patch("/api/v1/admin/config", headers=AUTH, json={"engines": {"ease": {"enabled": False}}})
    assert r.status_code == 200 and r.json()["values"]["engines.ease.enabled"] is False
    assert client.get("/api/v1/recommendations", params=params).json()["engine"] == "popularity"
    # experiment weights, dotted form; the earlier change is kept
    r = client.patch(
        "/api/v1/admin/config",
        headers=AUTH,
        json={"engines.ease.enabled": True, "routing.experiment.weights": {"popularity": 1.0}},
    )
    assert r.status_code == 200
    answer = client.get("/api/v1/recommendations", params=params).json()
    assert answer["engine"] == "popularity" and answer["fallback"] is None
    engines = {e["name"]: e["enabled"] for e in client.get("/api/v1/engines").json()["engines"]}
    assert engines["ease"] is True


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"routing": {"short_history": -1}}, "body.routing.short_history"),
        ({"routing.experiment.weights": {"ease": -1}}, "body.routing.experiment.weights"),
        ({"cache.ttl_s": "soon"}, "body.cache.ttl_s"),
        ({"serving.port": 9000}, "body.serving.port"),
        ({"serving": {"admin_api_key": "x"}}, "body.serving.admin_api_key"),
        ({}, "body"),
    ],
)
def test_patch_config_is_validated_like_the_config_file(
    client: TestClient, patch: dict[str, object], field: str
) -> None:
    assert_problem(client.patch("/api/v1/admin/config", headers=AUTH, json=patch), 422, field)
    # nothing changed
    assert client.get("/api/v1/admin/config", headers=AUTH).json()["values"]["routing.short_history"] == 5


def test_patch_config_body_must_be_an_object(client: TestClient) -> None:
    assert_problem(client.patch("/api/v1/admin/config", headers=AUTH, json=[1, 2]), 422, "body")


def _artifacts_copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_reload_swaps_and_refuses_a_corrupt_artifact(
    make_settings: Callable[..., Settings], trained_artifacts: Path, small_dataset: Dataset, tmp_path: Path
) -> None:
    root = _artifacts_copy(trained_artifacts, tmp_path / "art")
    with TestClient(create_app(make_settings(serving={"artifacts_dir": str(root)}))) as c:
        unchanged = c.post("/api/v1/admin/reload", headers=AUTH).json()["results"]
        assert {r["engine"]: r["status"] for r in unchanged}["popularity"] == "unchanged"
        # a new good version: swapped, and the cache key moves with it
        before = c.get("/api/v1/recommendations", params={"user_id": "cold", "k": 3}).json()
        model = Popularity.fit(small_dataset)
        model.config["version"] = "p2"
        set_current(model.save(version_dir(root, "popularity", "p2")))
        r = c.post("/api/v1/admin/reload", headers=AUTH, json={"engines": ["popularity"]})
        assert r.status_code == 200
        assert r.json()["results"] == [
            {"engine": "popularity", "status": "loaded", "version": "p2", "previous": "p1", "error": None}
        ]
        after = c.get("/api/v1/recommendations", params={"user_id": "cold", "k": 3}).json()
        assert before["model_version"] == "p1" and after["model_version"] == "p2" and after["cached"] is False
        # a corrupt one: refused with the reason, the old version keeps serving
        bad = model.save(version_dir(root, "popularity", "p3"))
        (bad / "weights.safetensors").write_bytes(b"garbage")
        set_current(bad)
        r = c.post("/api/v1/admin/reload", headers=AUTH)
        body = assert_problem(r, 409, str(bad), "previous version keeps serving")
        assert {x["engine"]: x["status"] for x in body["results"]}["popularity"] == "refused"
        again = c.get("/api/v1/recommendations", params={"user_id": "cold", "k": 3})
        assert again.status_code == 200 and again.json()["model_version"] == "p2"
        pop = next(e for e in c.get("/api/v1/engines").json()["engines"] if e["name"] == "popularity")
        assert pop["model_version"] == "p2" and str(bad) in pop["error"]


def test_reload_body_is_validated(client: TestClient) -> None:
    assert_problem(client.post("/api/v1/admin/reload", headers=AUTH, json={"engines": ["nope"]}), 422, "engines")


def test_background_poller_picks_up_a_new_version(
    make_settings: Callable[..., Settings], trained_artifacts: Path, small_dataset: Dataset, tmp_path: Path
) -> None:
    import time

    root = _artifacts_copy(trained_artifacts, tmp_path / "art")
    with TestClient(create_app(make_settings(serving={"artifacts_dir": str(root), "reload_poll_s": 0.05}))) as c:
        model = Popularity.fit(small_dataset)
        model.config["version"] = "polled"
        set_current(model.save(version_dir(root, "popularity", "polled")))
        deadline = time.monotonic() + 5
        version = None
        while time.monotonic() < deadline:
            engines = {e["name"]: e for e in c.get("/api/v1/engines").json()["engines"]}
            version = engines["popularity"]["model_version"]
            if version == "polled":
                break
            time.sleep(0.05)
        assert version == "polled"
