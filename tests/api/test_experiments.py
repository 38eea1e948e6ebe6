"""Attribution and the experiment readout through a live app, with the SQLite and the Redis impression store: every
answer names itself and its arm, is recorded, earns its clicks; the readout of a scripted experiment equals a hand
count; interleaving credits each engine; bad input is a 422 naming the field, with nothing stored."""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from recengine.api.app import create_app
from recengine.data.dataset import Dataset
from recengine.errors import StorageUnavailable
from recengine.serving.impressions import Impression, MemoryImpressionStore
from recengine.serving.routing import assign
from recengine.settings import Settings
from tests.api.gateway_helpers import ADMIN_KEY, assert_answer, assert_problem

AUTH = {"X-API-Key": ADMIN_KEY}
ARMS = {"ease": 1.0, "popularity": 1.0}


@pytest.fixture(params=["sqlite", "redis"])
def backend(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """Settings sections that put the event log, and so the impression store, in SQLite or in Redis."""
    if request.param == "sqlite":
        yield {}
        return
    url = request.getfixturevalue("redis_url")
    yield {"serving": {"events_backend": "redis"}, "cache": {"redis_url": url}}
    client = redis.Redis.from_url(url)
    keys = client.keys("recengine:imp:*")  # the impressions these tests wrote; nothing else is touched
    if keys:
        client.delete(*keys)
    client.close()


def experiment_app(make_settings: Callable[..., Settings], backend: dict[str, Any], **experiment: Any) -> TestClient:
    sections = {k: dict(v) for k, v in backend.items()}
    name = experiment.pop("name", f"exp-{uuid.uuid4().hex[:8]}")
    routing = {"experiment": {"name": name, "weights": dict(ARMS), **experiment}}
    return TestClient(create_app(make_settings(routing=routing, **sections)), raise_server_exceptions=False)


def users_by_arm(name: str, dataset: Dataset, n: int) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {arm: [] for arm in ARMS}
    for user in dataset.users.ids[1:]:
        arm = assign(name, ARMS, user)
        assert arm is not None
        if len(out[arm]) < n:
            out[arm].append(user)
    return out


def recommend(c: TestClient, user: str, k: int = 5) -> dict[str, Any]:
    r = c.get("/api/v1/recommendations", params={"user_id": user, "k": k})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def post(c: TestClient, *events: dict[str, Any]) -> dict[str, Any]:
    r = c.post("/api/v1/events", json=list(events))
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def readout(c: TestClient, **params: Any) -> dict[str, Any]:
    r = c.get("/api/v1/admin/experiments", params=params, headers=AUTH)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def counter(name: str, engine: str, arm: str) -> float:
    return REGISTRY.get_sample_value(name, {"engine": engine, "arm": arm}) or 0.0


def stored(c: TestClient) -> tuple[int, list[Impression], int]:
    """(events in the log, impressions of the experiment, attributions of the experiment)."""
    gw: Any = c.app.state.gateway  # type: ignore[attr-defined]
    portal: Any = c.portal
    portal.call(gw.service.impressions.flush)
    imps, attrs = portal.call(gw.attribution.store.scan, gw.settings.routing.experiment.name)
    return int(portal.call(gw.stores.events.count)), imps, len(attrs)


def test_every_answer_carries_its_recommendation_id_and_arm_and_is_recorded(
    make_settings: Callable[..., Settings], backend: dict[str, Any], small_dataset: Dataset
) -> None:
    with experiment_app(make_settings, backend) as c:
        name = c.app.state.gateway.settings.routing.experiment.name  # type: ignore[attr-defined]
        users = users_by_arm(name, small_dataset, 1)
        before = counter("recengine_impressions_total", "ease", "ease")
        for arm, (user,) in users.items():
            body = recommend(c, user, 4)
            assert_answer(body, 4)
            assert body["engine"] == arm and body["experiment"] == {"name": name, "arm": arm}
        again = recommend(c, users["ease"][0], 4)
        assert again["cached"] is True  # a cached answer is a new impression with an id of its own
        anonymous = c.post("/api/v1/recommendations", json={"recent_items": [small_dataset.items.ids.ids[1]], "k": 3})
        assert anonymous.status_code == 200 and anonymous.json()["experiment"] is None
        similar = c.get(f"/api/v1/items/{small_dataset.items.ids.ids[1]}/similar", params={"k": 3}).json()
        _, imps, _ = stored(c)
        assert counter("recengine_impressions_total", "ease", "ease") - before == 2
        gw: Any = c.app.state.gateway  # type: ignore[attr-defined]
        other = c.portal.call(gw.attribution.store.scan, None)[0]  # type: ignore[union-attr]
    ids = {i.recommendation_id for i in imps}
    assert len(imps) == 3 and again["recommendation_id"] in ids and body["recommendation_id"] in ids
    ease = next(i for i in imps if i.recommendation_id == again["recommendation_id"])
    assert (ease.user_id, ease.engine, ease.model_version, ease.arm) == (users["ease"][0], "ease", "e1", "ease")
    assert list(ease.items) == [i["item_id"] for i in again["items"]] and ease.experiment == name
    assert abs(ease.timestamp - time.time()) < 60
    kinds = {i.recommendation_id: i.kind for i in other}
    assert kinds[anonymous.json()["recommendation_id"]] == "rec" and kinds[similar["recommendation_id"]] == "similar"


def test_the_readout_of_a_scripted_experiment_equals_a_hand_count(
    make_settings: Callable[..., Settings], backend: dict[str, Any], small_dataset: Dataset
) -> None:
    with experiment_app(make_settings, backend) as c:
        name = c.app.state.gateway.settings.routing.experiment.name  # type: ignore[attr-defined]
        (e1, e2), (p1, p2) = users_by_arm(name, small_dataset, 2).values()
        attributed_before = counter("recengine_attributed_events_total", "popularity", "popularity")
        # ease, user e1: answer A; a click on its 2nd item naming A (by id; A's next event: rank 2); answer B after.
        a = recommend(c, e1)
        assert (
            post(c, {"user_id": e1, "item_id": a["items"][1]["item_id"], "recommendation_id": a["recommendation_id"]})[
                "attributed"
            ]
            == 1
        )
        recommend(c, e1)
        # ease, user e2: answer C; the next event is for an item C did not show: not attributed, an HR miss.
        cc = recommend(c, e2)
        unseen = next(i for i in small_dataset.items.ids.ids[1:] if i not in {x["item_id"] for x in cc["items"]})
        assert post(c, {"user_id": e2, "item_id": unseen})["attributed"] == 0
        # popularity, user p1: answer D; clicks on its 1st and 4th items without an id (the window), in one batch.
        d = recommend(c, p1)
        clicks = [{"user_id": p1, "item_id": d["items"][i]["item_id"]} for i in (0, 3)]
        assert post(c, *clicks)["attributed"] == 2
        # popularity, user p2: answer F; a click dated two hours back is outside the window: nothing.
        f = recommend(c, p2)
        old = {"user_id": p2, "item_id": f["items"][0]["item_id"], "timestamp": time.time() - 7200}
        assert post(c, old)["attributed"] == 0
        out = readout(c, k=3)
        assert counter("recengine_attributed_events_total", "popularity", "popularity") - attributed_before == 2
    assert out["experiment"] == name and out["mode"] == "split" and out["control"] == "ease" and out["k"] == 3
    ease, pop = out["arms"]
    # ease: users e1, e2; answers A, B, C; one attributed event (on A) → CTR 1/3; HR@3: e1 hit (rank 2), e2 miss.
    assert (ease["arm"], ease["users"], ease["impressions"], ease["attributed_events"]) == ("ease", 2, 3, 1)
    assert ease["clicked_impressions"] == 1 and ease["ctr"]["value"] == pytest.approx(1 / 3)
    assert (ease["hr_at_k"]["users"], ease["hr_at_k"]["hits"], ease["hr_at_k"]["value"]) == (2, 1, 0.5)
    # popularity: users p1, p2; answers D, F; two events on D → CTR 1/2; HR@3: p1 hit (rank 1), p2 never judged.
    assert (pop["arm"], pop["users"], pop["impressions"], pop["attributed_events"]) == ("popularity", 2, 2, 2)
    assert pop["clicked_impressions"] == 1 and pop["ctr"]["value"] == 0.5
    assert (pop["hr_at_k"]["users"], pop["hr_at_k"]["hits"]) == (1, 1)
    # Against the control: CTR 1/2 vs 1/3, pooled 2/5: z = (1/2 - 1/3) / sqrt(2/5 · 3/5 · (1/2 + 1/3)).
    z = (1 / 2 - 1 / 3) / math.sqrt(0.4 * 0.6 * (1 / 2 + 1 / 3))
    assert ease["vs_control"] is None
    assert pop["vs_control"]["ctr"]["z"] == pytest.approx(z)
    assert pop["vs_control"]["ctr"]["p_value"] == pytest.approx(math.erfc(z / math.sqrt(2)))
    assert pop["vs_control"]["hr_at_k"]["diff"] == pytest.approx(0.5)
    assert "two-proportion z-test" in out["methods"]["test"]
    assert 0 <= ease["ctr"]["ci_low"] < 1 / 3 < ease["ctr"]["ci_high"] <= 1


def test_interleaving_credits_each_item_to_its_engine_and_reads_out_wins(
    make_settings: Callable[..., Settings], backend: dict[str, Any], small_dataset: Dataset
) -> None:
    with experiment_app(make_settings, backend, interleave=["ease", "popularity"]) as c:
        name = c.app.state.gateway.settings.routing.experiment.name  # type: ignore[attr-defined]
        u1, u2, u3 = small_dataset.users.ids[1:4]
        answers = {u: recommend(c, u, 6) for u in (u1, u2, u3)}
        for body in answers.values():
            assert body["engine"] == "interleave" and body["experiment"] == {"name": name, "arm": "interleave"}
            credits = [i["engine"] for i in body["items"]]
            assert sorted(credits) == ["ease"] * 3 + ["popularity"] * 3  # six picks, three rounds of two
            assert len({i["item_id"] for i in body["items"]}) == 6
            assert [i["rank"] for i in body["items"]] == list(range(1, 7))
            assert body["model_version"] == "ease:e1+popularity:p1"

        def click(user: str, engine: str) -> dict[str, Any]:
            body = answers[user]
            item = next(i["item_id"] for i in body["items"] if i["engine"] == engine)
            return {"user_id": user, "item_id": item, "recommendation_id": body["recommendation_id"]}

        # u1 clicks an ease item (a win for ease), u2 a popularity one (a loss), u3 one of each (a tie).
        assert (
            post(c, click(u1, "ease"), click(u2, "popularity"), click(u3, "ease"), click(u3, "popularity"))[
                "attributed"
            ]
            == 4
        )
        _, imps, n_attr = stored(c)
        out = readout(c)
    assert n_attr == 4 and {i.arm for i in imps} == {"interleave"}
    assert all(len(i.credits) == len(i.items) == 6 for i in imps)
    il = out["interleave"]
    assert out["mode"] == "interleave" and out["arms"] == [] and il["engines"] == ["ease", "popularity"]
    assert (il["users"], il["impressions"], il["attributed_events"]) == (3, 3, 4)
    assert il["credited"] == {"ease": 2, "popularity": 2}
    assert (il["wins"], il["ties"], il["losses"]) == (1, 1, 1) and il["sign_test"]["p_value"] == pytest.approx(1.0)


def test_interleaving_needs_both_engines(make_settings: Callable[..., Settings], small_dataset: Dataset) -> None:
    with experiment_app(make_settings, {}, interleave=["ease", "popularity"]) as c:
        patched = c.patch("/api/v1/admin/config", headers=AUTH, json={"engines.ease.enabled": False})
        assert patched.status_code == 200
        body = recommend(c, small_dataset.users.ids[1])
    assert body["engine"] == "popularity" and body["experiment"] is None
    assert all("engine" not in i for i in body["items"])


class SlowOrBrokenStore(MemoryImpressionStore):
    """Writes take half a second, then fail; reads fail."""

    async def add(self, impressions: Sequence[Impression]) -> None:
        await asyncio.sleep(0.5)
        raise StorageUnavailable("impression store down")

    async def recent(self, user_id: str, since: float) -> list[Impression]:
        raise StorageUnavailable("impression store down")


def test_a_slow_or_broken_impression_store_fails_no_request(
    make_settings: Callable[..., Settings], small_dataset: Dataset
) -> None:
    with experiment_app(make_settings, {}) as c:
        gw: Any = c.app.state.gateway  # type: ignore[attr-defined]
        broken = SlowOrBrokenStore()
        gw.service.impressions.store = broken
        gw.attribution.store = broken
        user = small_dataset.users.ids[1]
        recommend(c, user)  # warm the cache: what is timed below is the recording, not the engine
        started = time.perf_counter()
        for _ in range(5):
            recommend(c, user)
        assert time.perf_counter() - started < 1.0  # five answers while the store takes 0.5 s a batch
        body = post(c, {"user_id": user, "item_id": small_dataset.items.ids.ids[1]})
        assert body["accepted"] == 1 and body["attributed"] is None  # stored; only the attribution is missing


@pytest.mark.parametrize(
    ("events", "field"),
    [
        ({"recommendation_id": "not-an-id"}, "body.recommendation_id"),
        ({"recommendation_id": "A" * 32}, "body.recommendation_id"),
        ({"recommendation_id": "a" * 31}, "body.recommendation_id"),
        ({"recommendation_id": 12345}, "body.recommendation_id"),
        ([{}, {"recommendation_id": "z" * 32}], "body[1].recommendation_id"),
    ],
)
def test_a_bad_recommendation_id_is_a_422_naming_it_and_nothing_is_stored(
    make_settings: Callable[..., Settings], small_dataset: Dataset, events: Any, field: str
) -> None:
    with experiment_app(make_settings, {}) as c:
        user, item = small_dataset.users.ids[1], small_dataset.items.ids.ids[1]
        shown = recommend(c, user)
        before = stored(c)
        base = {"user_id": user, "item_id": shown["items"][0]["item_id"] or item}
        body = [{**base, **e} for e in events] if isinstance(events, list) else {**base, **events}
        problem = assert_problem(c.post("/api/v1/events", json=body), 422, field)
        assert [e["field"] for e in problem["errors"]] == [field]
        assert stored(c) == before  # no event, no attribution


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"k": 0}, "query.k"),
        ({"k": 101}, "query.k"),  # serving.max_k
        ({"k": "ten"}, "query.k"),
        ({"experiment": ""}, "query.experiment"),
        ({"experiment": "x" * 129}, "query.experiment"),
    ],
)
def test_bad_readout_parameters_are_a_422_naming_them(client: TestClient, params: dict[str, Any], field: str) -> None:
    body = assert_problem(client.get("/api/v1/admin/experiments", params=params, headers=AUTH), 422, field)
    assert body["errors"][0]["field"] == field


def test_the_readout_is_an_admin_route_and_names_what_it_cannot_find(client: TestClient) -> None:
    assert_problem(client.get("/api/v1/admin/experiments"), 401, "X-API-Key")
    assert_problem(client.get("/api/v1/admin/experiments", headers={"X-API-Key": "wrong"}), 403)
    assert_problem(client.get("/api/v1/admin/experiments", params={"experiment": "gone"}, headers=AUTH), 404, "gone")
    empty = readout(client)  # the configured experiment (no weights: no arms) reads out empty, not 404
    assert empty["experiment"] == "default" and empty["arms"] == [] and empty["interleave"] is None


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"routing.experiment.interleave": ["ease"]}, "body.routing.experiment.interleave"),
        ({"routing.experiment.interleave": ["ease", "ease"]}, "body.routing.experiment.interleave"),
        ({"routing.experiment.interleave": ["ease", "bert"]}, "body.routing.experiment.interleave"),
        ({"routing": {"experiment": {"interleave": "ease"}}}, "body.routing.experiment.interleave"),
        ({"routing.experiment.mode": "interleave"}, "body.routing.experiment.mode"),  # derived: not a setting
    ],
)
def test_a_bad_interleave_setting_is_refused_and_changes_nothing(client: TestClient, patch: Any, field: str) -> None:
    assert_problem(client.patch("/api/v1/admin/config", headers=AUTH, json=patch), 422, field)
    values = client.get("/api/v1/admin/config", headers=AUTH).json()["values"]
    assert values["routing.experiment.interleave"] == [] and values["routing.experiment.weights"] == {}


def test_interleaving_is_switched_on_and_off_at_run_time(client: TestClient, small_dataset: Dataset) -> None:
    user = small_dataset.users.ids[1]
    on = client.patch(
        "/api/v1/admin/config", headers=AUTH, json={"routing.experiment.interleave": ["popularity", "ease"]}
    )
    assert on.status_code == 200, on.text
    assert recommend(client, user)["engine"] == "interleave"
    assert readout(client)["mode"] == "interleave"
    off = client.patch("/api/v1/admin/config", headers=AUTH, json={"routing": {"experiment": {"interleave": []}}})
    assert off.status_code == 200 and recommend(client, user)["engine"] != "interleave"


def test_the_schema_documents_the_new_fields_and_route(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    components = schema["components"]["schemas"]
    answer = components["RecommendationResponse"]
    assert {"recommendation_id", "experiment"} <= set(answer["required"])
    assert "recommendation_id" in components["SimilarItemsResponse"]["required"]
    body = schema["paths"]["/api/v1/events"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    rid = body["oneOf"][0]["properties"]["recommendation_id"]
    assert any(b.get("pattern") == "^[0-9a-f]{32}$" for b in rid["anyOf"])
    assert "attributed" in components["EventsResponse"]["properties"]
    route = schema["paths"]["/api/v1/admin/experiments"]["get"]
    k = next(p for p in route["parameters"] if p["name"] == "k")
    assert (k["schema"]["minimum"], k["schema"]["maximum"]) == (1, client.app.state.settings.serving.max_k)  # type: ignore[attr-defined]
    assert {"200", "401", "403", "404", "422"} <= set(route["responses"])
    readout_schema = components["ExperimentReadout"]
    assert {"arms", "interleave", "methods", "control"} <= set(readout_schema["properties"])


def test_with_impressions_off_answers_keep_their_ids_and_nothing_is_read_out(
    make_settings: Callable[..., Settings], small_dataset: Dataset, tmp_path: Path
) -> None:
    settings = make_settings(serving={"impressions": False, "impressions_db": str(tmp_path / "imp.sqlite3")})
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        body = recommend(c, small_dataset.users.ids[1])
        assert len(body["recommendation_id"]) == 32
        event = {"user_id": small_dataset.users.ids[1], "item_id": body["items"][0]["item_id"]}
        assert post(c, event)["attributed"] is None
        assert_problem(c.get("/api/v1/admin/experiments", headers=AUTH), 404, "serving.impressions")
    assert not (tmp_path / "imp.sqlite3").exists()
