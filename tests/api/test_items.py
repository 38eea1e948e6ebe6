"""The catalogue end to end, against live apps: two app instances sharing one SQLite file, or one Redis, are two
replicas. A new item is placed by the neural engine at once on both; a retired one is never recommended again by
any engine, not even from a cached answer; the catalogue survives a restart and a model reload; writes need the
write key when one is set; bad input is a 422 naming the field, with nothing stored."""

from __future__ import annotations

import contextlib
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from recengine.api.app import create_app
from recengine.data.dataset import Dataset
from recengine.engines.artifact import set_current, version_dir
from recengine.engines.ease import EASE
from recengine.engines.popularity import Popularity
from recengine.settings import EaseSettings, Settings, load_settings
from tests.api.gateway_helpers import ADMIN_KEY, assert_problem
from tests.engines.neural.category_led import category_led

WRITE_KEY = "write-key-0123456789abcdef"
ENGINES = ("popularity", "ease", "neural")


@pytest.fixture(scope="module")
def artifacts(small_dataset: Dataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Popularity, EASE and a neural engine (untrained, led by its categories: no training needed to score)."""
    root = tmp_path_factory.mktemp("catalogue-artifacts")
    pop = Popularity.fit(small_dataset)
    pop.config["version"] = "p1"
    set_current(pop.save(version_dir(root, "popularity", "p1")))
    ease = EASE.fit(small_dataset, EaseSettings(lambdas=[50.0]))
    ease.config["version"] = "e1"
    set_current(ease.save(version_dir(root, "ease", "e1")))
    neural = category_led(small_dataset)
    neural.config["version"] = "n1"
    set_current(neural.save(version_dir(root, "neural", "n1")))
    return root


Make = Callable[..., Settings]


@pytest.fixture(params=["sqlite", "redis"])
def make(request: pytest.FixtureRequest, artifacts: Path, small_dataset: Dataset, tmp_path: Path) -> Make:
    """Settings of one deployment: every app built from them is a replica of the same catalogue."""
    sections: dict[str, Any] = {}
    if request.param == "sqlite":
        sections["catalogue"] = {"db": str(tmp_path / "catalogue.sqlite3")}
    else:
        url = request.getfixturevalue("redis_url")
        sections["cache"] = {"redis_url": url}
        # A new catalogue per test, in a Redis whose cache holds earlier tests' answers: the catalogue's epoch in
        # the cache key keeps them apart.
        sections["catalogue"] = {"backend": "redis", "redis_prefix": f"test:catalogue:{uuid.uuid4().hex}"}

    def build(artifacts_dir: Path = artifacts, **serving: Any) -> Settings:
        return load_settings(
            None,
            serving={
                "artifacts_dir": str(artifacts_dir),
                "events_db": str(tmp_path / "events.sqlite3"),
                "admin_api_key": ADMIN_KEY,
                "reload_poll_s": 0,
                "max_k": 1000,
                **serving,
            },
            data={"dir": str(small_dataset.path)},
            observability={"log_level": "ERROR"},
            **sections,
        )

    return build


@contextlib.contextmanager
def replicas(settings: Settings, n: int = 2) -> Iterator[list[TestClient]]:
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(TestClient(create_app(settings), raise_server_exceptions=False)) for _ in range(n)]


def user(ds: Dataset) -> str:
    return ds.users.ids[1]


def everything(ds: Dataset) -> int:
    return ds.n_items + 10  # more than there are items: every scorable item comes back


def recommended(client: TestClient, ds: Dataset, engine: str, **body: Any) -> tuple[list[str], dict[str, Any]]:
    r = client.post(
        "/api/v1/recommendations", json={"user_id": user(ds), "k": everything(ds), "engine": engine, **body}
    )
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["engine"] == engine and out["fallback"] is None, out
    return [i["item_id"] for i in out["items"]], out


def similar(client: TestClient, item_id: str, engine: str, k: int) -> list[str]:
    r = client.get(f"/api/v1/items/{item_id}/similar", params={"k": k, "engine": engine})
    assert r.status_code == 200, r.text
    assert r.json()["engine"] == engine
    return [i["item_id"] for i in r.json()["items"]]


def test_a_new_item_is_placed_by_the_neural_engine_at_once_on_every_replica(make: Make, small_dataset: Dataset) -> None:
    ds = small_dataset
    category = ds.items.categories[1][0]  # type: ignore[index]
    with replicas(make()) as (a, b):
        assert "new-1" not in recommended(b, ds, "neural")[0]
        assert_problem(b.get("/api/v1/items/new-1/similar"), 404)
        assert_problem(b.get("/api/v1/items/new-1"), 404)

        r = a.put(
            "/api/v1/items/new-1",
            json={
                "title": f"Golden River {category}",
                "categories": [category, "fresh", category],
                "attributes": {"price": 20, "colour": "gold", "gift": True},
            },
        )
        assert r.status_code == 201, r.text
        written = r.json()
        assert written["source"] == "catalogue" and written["available"] is True and written["version"] == 1
        assert written["categories"] == [category, "fresh"]  # each once, in the order given
        got = b.get("/api/v1/items/new-1")
        assert got.status_code == 200 and got.json() == written  # the other replica has it

        ids, out = recommended(b, ds, "neural")
        assert "new-1" in ids  # scored by the neural engine of the replica that did not take the write
        entry = next(i for i in out["items"] if i["item_id"] == "new-1")
        assert entry["title"] == f"Golden River {category}" and entry["categories"] == [category, "fresh"]
        assert "new-1" in recommended(a, ds, "neural")[0]
        near = similar(b, "new-1", "neural", 10)
        assert len(near) == 10 and "new-1" not in near
        assert "new-1" in similar(b, ds.items.ids.ids[1], "neural", everything(ds))
        # Category filters see it: nothing else carries "fresh".
        assert recommended(b, ds, "neural", include_categories=["fresh"])[0] == ["new-1"]
        # The engines that cannot score it say so; popularity never recommends it.
        engines = {e["name"]: e for e in b.get("/api/v1/engines").json()["engines"]}
        assert engines["neural"]["scores_new_items"] is True and engines["neural"]["unscored_items"] == 0
        assert engines["neural"]["numeric_features"] == ["price"]
        for name in ("popularity", "ease"):
            assert engines[name]["scores_new_items"] is False and engines[name]["unscored_items"] == 1, engines[name]
        assert engines["transformer"]["unscored_items"] is None  # not loaded
        assert "new-1" not in recommended(b, ds, "popularity")[0]

        # A second PUT replaces the record: the category it no longer has stops finding it, on both replicas.
        r = a.put("/api/v1/items/new-1", json={"title": "Renamed", "categories": [category]})
        assert r.status_code == 200 and r.json()["version"] == 2 and r.json()["attributes"] == {}
        for client in (a, b):
            assert recommended(client, ds, "neural", include_categories=["fresh"])[0] == []
            assert "new-1" in recommended(client, ds, "neural", include_categories=[category])[0]
        # Retired, the new item leaves the neural answers and the similar lists too.
        assert a.delete("/api/v1/items/new-1").status_code == 200
        assert "new-1" not in recommended(b, ds, "neural")[0]
        assert "new-1" not in similar(b, ds.items.ids.ids[1], "neural", everything(ds))
        assert_problem(b.get("/api/v1/items/new-1/similar"), 404, "retired")
        engines = {e["name"]: e for e in b.get("/api/v1/engines").json()["engines"]}
        assert engines["popularity"]["unscored_items"] == 0  # a retired item is nothing to score


def test_a_retired_item_is_never_recommended_again_not_even_from_a_cached_answer(
    make: Make, small_dataset: Dataset
) -> None:
    ds = small_dataset
    with replicas(make()) as (a, b):
        for engine in ENGINES:
            params = {"user_id": user(ds), "k": 5, "engine": engine}
            first = b.get("/api/v1/recommendations", params=params).json()
            again = b.get("/api/v1/recommendations", params=params).json()
            assert again["cached"] is True and again["items"] == first["items"]  # the answer that holds it
            top = first["items"][0]["item_id"]
            r = a.delete(f"/api/v1/items/{top}")
            assert r.status_code == 200, r.text
            assert r.json()["available"] is False and r.json()["source"] == "catalogue"
            after = b.get("/api/v1/recommendations", params=params).json()
            assert after["cached"] is False and top not in [i["item_id"] for i in after["items"]]
            assert len(after["items"]) == 5
            for client in (a, b):
                assert top not in recommended(client, ds, engine)[0]
                assert top not in recommended(client, ds, engine, exclude_seen=False)[0]
                other = next(i for i in ds.items.ids.ids[1:] if i != top)
                assert top not in similar(client, other, engine, everything(ds))
        # Retiring again changes nothing; the catalogue lists the retired items.
        version = b.get("/api/v1/items").json()["catalogue_version"]
        assert a.delete(f"/api/v1/items/{top}").status_code == 200
        listed = b.get("/api/v1/items", params={"available": "false"}).json()
        assert listed["catalogue_version"] == version and len(listed["items"]) == len(ENGINES)
        assert_problem(a.delete("/api/v1/items/never-heard-of"), 404, "never-heard-of")
        # A PUT with available brings it back.
        assert a.put(f"/api/v1/items/{top}", json={"title": "back"}).status_code == 200
        assert top in recommended(b, ds, "neural")[0]


def test_category_changes_of_known_items_reach_every_engine(make: Make, small_dataset: Dataset) -> None:
    ds = small_dataset
    moved = ds.items.ids.ids[5]
    old = ds.items.categories[5][0]  # type: ignore[index]
    with replicas(make()) as (a, b):
        before = recommended(b, ds, "popularity", include_categories=[old])[0]
        r = a.put("/api/v1/items", json={"items": [{"item_id": moved, "title": "Moved", "categories": ["moved"]}]})
        assert r.status_code == 200 and r.json() == {"version": 1, "created": 1, "updated": 0, "item_ids": [moved]}
        for engine in ENGINES:
            ids, out = recommended(b, ds, engine, include_categories=["moved"], exclude_seen=False)
            assert ids == [moved] and out["items"][0]["title"] == "Moved"
            assert moved not in recommended(b, ds, engine, include_categories=[old], exclude_seen=False)[0]
            assert moved not in recommended(b, ds, engine, exclude_categories=["moved"], exclude_seen=False)[0]
        assert set(recommended(b, ds, "popularity", include_categories=[old])[0]) == set(before) - {moved}


def test_the_catalogue_survives_a_restart_and_a_model_reload(
    make: Make, small_dataset: Dataset, artifacts: Path, tmp_path: Path
) -> None:
    ds = small_dataset
    private = tmp_path / "artifacts"
    shutil.copytree(artifacts, private)
    settings = make(private)
    retired = ds.items.ids.ids[1]
    with replicas(settings, 1) as (a,):
        assert a.put("/api/v1/items/new-1", json={"title": "Fresh", "categories": ["fresh"]}).status_code == 201
        assert a.delete(f"/api/v1/items/{retired}").status_code == 200
    with replicas(settings, 1) as (c,):
        assert c.get("/api/v1/items/new-1").json()["title"] == "Fresh"
        assert_problem(c.get(f"/api/v1/items/{retired}"), 404, "retired")
        assert_problem(c.get(f"/api/v1/items/{retired}/similar"), 404, "retired")
        assert "new-1" in recommended(c, ds, "neural")[0]
        assert len(similar(c, "new-1", "neural", 5)) == 5
        for engine in ENGINES:
            assert retired not in recommended(c, ds, engine)[0]
        # A new model version (a retrain that did not see the catalogue): placed and filtered before it serves.
        neural = category_led(ds)
        neural.config["version"] = "n2"
        set_current(neural.save(version_dir(private, "neural", "n2")))
        r = c.post("/api/v1/admin/reload", headers={"X-API-Key": ADMIN_KEY})
        assert r.status_code == 200, r.text
        ids, out = recommended(c, ds, "neural")
        assert out["model_version"] == "n2" and "new-1" in ids and retired not in ids
        assert recommended(c, ds, "neural", include_categories=["fresh"])[0] == ["new-1"]


def test_search(make: Make, small_dataset: Dataset) -> None:
    ds = small_dataset
    with replicas(make(), 1) as (a,):
        batch = [
            {"item_id": "sku-9", "title": "Pot"},
            {"item_id": "sku-10"},
            {"item_id": "sku-9", "title": "Blue Teapot"},
        ]
        r = a.put("/api/v1/items", json={"items": batch})
        assert r.json() == {"version": 1, "created": 2, "updated": 1, "item_ids": ["sku-9", "sku-10", "sku-9"]}
        assert a.get("/api/v1/items/sku-9").json()["title"] == "Blue Teapot"  # the later entry wins
        a.delete("/api/v1/items/sku-10")
        found = a.get("/api/v1/items", params={"query": "teapot"}).json()
        assert [i["item_id"] for i in found["items"]] == ["sku-9"] and found["catalogue_version"] == 2
        category = ds.items.categories[3][0]  # type: ignore[index]
        in_category = a.get("/api/v1/items", params={"category": category, "limit": 1000}).json()["items"]
        expected = {ds.items.ids.ids[i] for i, cs in enumerate(ds.items.categories or []) if category in cs}
        assert {i["item_id"] for i in in_category} == expected and all(i["source"] == "model" for i in in_category)
        limited = a.get("/api/v1/items", params={"limit": 3}).json()["items"]
        assert [i["item_id"] for i in limited[:2]] == ["sku-10", "sku-9"] and len(limited) == 3  # newest first
        assert [i["item_id"] for i in a.get("/api/v1/items", params={"available": False}).json()["items"]] == ["sku-10"]
        known = a.get(f"/api/v1/items/{ds.items.ids.ids[3]}").json()
        assert known["source"] == "model" and known["version"] == 0 and "price" in known["attributes"]


@pytest.fixture
def sqlite_make(artifacts: Path, small_dataset: Dataset, tmp_path: Path) -> Make:
    def build(**serving: Any) -> Settings:
        return load_settings(
            None,
            serving={
                "artifacts_dir": str(artifacts),
                "events_db": str(tmp_path / "events.sqlite3"),
                "admin_api_key": ADMIN_KEY,
                "reload_poll_s": 0,
                **serving,
            },
            data={"dir": str(small_dataset.path)},
            observability={"log_level": "ERROR"},
            catalogue={"db": str(tmp_path / "catalogue.sqlite3"), "max_batch_items": 3},
        )

    return build


def test_writes_need_the_write_key_when_one_is_set(sqlite_make: Make, small_dataset: Dataset) -> None:
    ds = small_dataset
    writes: list[tuple[str, str, Any]] = [
        ("PUT", "/api/v1/items/sku-1", {"title": "x"}),
        ("PUT", "/api/v1/items", {"items": [{"item_id": "sku-1"}]}),
        ("DELETE", f"/api/v1/items/{ds.items.ids.ids[1]}", None),
        ("POST", "/api/v1/events", {"user_id": user(ds), "item_id": "sku-1"}),
    ]
    with replicas(sqlite_make(write_api_key=WRITE_KEY), 1) as (c,):
        for method, path, body in writes:
            assert_problem(c.request(method, path, json=body), 401, "X-API-Key")
            assert_problem(c.request(method, path, json=body, headers={"X-API-Key": ADMIN_KEY}), 403)
            assert_problem(c.request(method, path, json=body, headers={"X-API-Key": WRITE_KEY[:-1]}), 403)
        # Nothing was stored by any of them.
        assert c.get("/api/v1/items").json()["catalogue_version"] == 0
        assert c.get(f"/api/v1/items/{ds.items.ids.ids[1]}").json()["source"] == "model"  # not retired
        assert c.get("/metrics").text.count('recengine_events_total{outcome="accepted"}') <= 1
        # Reads stay open; the key lets every write through.
        assert c.get("/api/v1/recommendations", params={"user_id": user(ds)}).status_code == 200
        assert c.get("/api/v1/items", params={"query": "i1"}).status_code == 200
        for method, path, body in writes:
            r = c.request(method, path, json=body, headers={"X-API-Key": WRITE_KEY})
            assert r.status_code in (200, 201), (path, r.text)
        assert c.get("/api/v1/items/sku-1").status_code == 200
    with replicas(sqlite_make(), 1) as (c,):  # no key configured: writes are open
        assert c.put("/api/v1/items/sku-2", json={}).status_code == 201


BAD: list[tuple[str, str, Any, str]] = [
    ("PUT", "/api/v1/items/sku-1", {"title": 5}, "body.title"),
    ("PUT", "/api/v1/items/sku-1", {"title": "x" * 1025}, "body.title"),
    ("PUT", "/api/v1/items/sku-1", {"categories": "books"}, "body.categories"),
    ("PUT", "/api/v1/items/sku-1", {"categories": [""]}, "body.categories[0]"),
    ("PUT", "/api/v1/items/sku-1", {"categories": [f"c{i}" for i in range(65)]}, "body.categories"),
    ("PUT", "/api/v1/items/sku-1", {"attributes": {"1price": 1}}, "body.attributes.1price"),
    ("PUT", "/api/v1/items/sku-1", {"attributes": {"size": [1, 2]}}, "body.attributes.size"),
    ("PUT", "/api/v1/items/sku-1", {"attributes": {"size": {"cm": 3}}}, "body.attributes.size"),
    ("PUT", "/api/v1/items/sku-1", {"attributes": {"price": "cheap"}}, "body.attributes.price"),
    ("PUT", "/api/v1/items/sku-1", {"attributes": {"price": True}}, "body.attributes.price"),
    ("PUT", "/api/v1/items/sku-1", {"attributes": {f"a{i}": 1 for i in range(65)}}, "body.attributes"),
    ("PUT", "/api/v1/items/sku-1", {"available": "yes"}, "body.available"),
    ("PUT", "/api/v1/items/sku-1", {"colour": "red"}, "body.colour"),
    ("PUT", "/api/v1/items/sku-1", None, "body"),
    ("PUT", "/api/v1/items/%20", {}, "path.item_id"),
    ("PUT", f"/api/v1/items/{'x' * 257}", {}, "path.item_id"),
    ("PUT", "/api/v1/items", {"items": []}, "body.items"),
    ("PUT", "/api/v1/items", [{"item_id": "a"}], "body"),
    ("PUT", "/api/v1/items", {"items": [{"title": "no id"}]}, "body.items[0].item_id"),
    ("PUT", "/api/v1/items", {"items": [{"item_id": "a"}, {"item_id": "b", "attributes": {"price": "x"}}]},
     "body.items[1].attributes.price"),
    ("PUT", "/api/v1/items", {"items": [{"item_id": str(i)} for i in range(4)]}, "body.items"),
    ("GET", "/api/v1/items?limit=0", None, "query.limit"),
    ("GET", "/api/v1/items?limit=many", None, "query.limit"),
    ("GET", "/api/v1/items?available=maybe", None, "query.available"),
    ("GET", f"/api/v1/items?query={'q' * 257}", None, "query.query"),
    ("GET", "/api/v1/items?category=", None, "query.category"),
    ("DELETE", "/api/v1/items/%20", None, "path.item_id"),
]  # fmt: skip


def test_bad_input_is_a_422_naming_the_field_and_nothing_is_stored(sqlite_make: Make) -> None:
    with replicas(sqlite_make(), 1) as (c,):
        for method, path, body, field in BAD:
            r = c.request(method, path, json=body) if body is not None else c.request(method, path)
            problem = assert_problem(r, 422)
            assert any(e["field"].startswith(field) for e in problem["errors"]), (path, body, problem)
        assert c.get("/api/v1/items").json()["catalogue_version"] == 0
        assert c.get("/api/v1/items/sku-1").status_code == 404
        r = c.put("/api/v1/items/sku-1", content=b"{not json", headers={"content-type": "application/json"})
        assert_problem(r, 422, "body")


def test_the_openapi_document_states_the_catalogue_contract(sqlite_make: Make) -> None:
    with replicas(sqlite_make(), 1) as (c,):
        schema = c.get("/openapi.json").json()
    paths = schema["paths"]
    assert set(paths["/api/v1/items/{item_id}"]) == {"get", "put", "delete"}
    assert set(paths["/api/v1/items"]) == {"get", "put"}
    put = paths["/api/v1/items/{item_id}"]["put"]
    assert {"200", "201", "401", "403", "422", "503"} <= set(put["responses"])
    for path, method in (("/api/v1/items/{item_id}", "put"), ("/api/v1/items", "put"), ("/api/v1/events", "post")):
        op = paths[path][method]
        assert any(p["name"] == "X-API-Key" and p["in"] == "header" for p in op["parameters"]), path
        assert {"401", "403"} <= set(op["responses"]), path
    components = schema["components"]["schemas"]
    assert components["ItemsBatchIn"]["properties"]["items"]["maxItems"] == 3  # catalogue.max_batch_items
    attributes = components["ItemIn"]["properties"]["attributes"]
    assert attributes["additionalProperties"] is False and attributes["maxProperties"] == 64


def test_the_catalogue_gauge(sqlite_make: Make) -> None:
    with replicas(sqlite_make(), 1) as (c,):
        c.put("/api/v1/items", json={"items": [{"item_id": "a"}, {"item_id": "b"}]})
        c.delete("/api/v1/items/a")
        text = c.get("/metrics").text
    assert 'recengine_catalogue_items{state="available"} 1.0' in text
    assert 'recengine_catalogue_items{state="unavailable"} 1.0' in text
