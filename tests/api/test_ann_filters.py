"""Category filters through the HTTP API on a neural engine served by IVF: k items of the category whenever k exist.

``include_categories`` used to reach the index as an exclusion list of the rest of the catalogue; IVF probes 16 of
its 78 lists, which near a user of other categories hold few of a category's items, so answers came back short or
empty. The filter is now an allow-list applied inside the search.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient

from recengine.api.app import create_app
from recengine.data.dataset import Dataset
from recengine.engines.artifact import set_current, version_dir
from recengine.engines.neural.engine import NeuralEngine
from recengine.settings import load_settings
from tests.api.gateway_helpers import ADMIN_KEY
from tests.conftest import make_dataset
from tests.engines.neural.category_led import category_led, items_by_category

K = 10


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    return make_dataset(tmp_path_factory.mktemp("ann-catalogue"), n_users=1000, n_items=5000, seed=4, mean_length=8.0)


@pytest.fixture(scope="module")
def exact(catalogue: Dataset) -> NeuralEngine:
    """The served model's exact twin: the reference answer of every filtered request."""
    return category_led(catalogue)


@pytest.fixture(scope="module")
def client(catalogue: Dataset, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    root = tmp_path_factory.mktemp("ann-artifacts")
    engine = category_led(catalogue, ann_threshold=10, ann_kind="ivf")
    engine.config["version"] = "n1"
    set_current(engine.save(version_dir(root, "neural", "n1")))
    settings = load_settings(
        None,
        serving={
            "artifacts_dir": str(root),
            "events_db": str(root / "events.sqlite3"),
            "admin_api_key": ADMIN_KEY,
            "reload_poll_s": 0,
            # Deadlines are not under test: a filtered IVF search on a busy 2-core machine can pass 50 ms.
            "engine_timeout_ms": 5000,
        },
        data={"dir": str(catalogue.path)},
        observability={"log_level": "ERROR"},
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        served = c.app.state.gateway.service.registry.get("neural").engine  # type: ignore[attr-defined]
        index = served.index
        assert index.kind == "ivf" and index.index.nprobe < index.index.nlist, "the ANN path, approximate"
        yield c


def recommend(client: TestClient, **body: object) -> dict[str, object]:
    r = client.post("/api/v1/recommendations", json={"k": K, "engine": "neural", "exclude_seen": True, **body})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["engine"] == "neural" and out["fallback"] is None
    return out  # type: ignore[no-any-return]


def sessions(catalogue: Dataset, n: int) -> list[list[str]]:
    sequences = catalogue.sequences()
    ids = catalogue.items.ids.ids
    return [[ids[i] for i in sequences[u][-8:]] for u in range(1, n + 1)]


def test_include_categories_returns_k_items_of_the_category_best_first(
    client: TestClient, catalogue: Dataset, exact: NeuralEngine
) -> None:
    ids = catalogue.items.ids
    everything = np.arange(1, catalogue.n_items + 1)
    for category, items in items_by_category(catalogue).items():
        rest = np.setdiff1d(everything, items)
        for session in sessions(catalogue, 12):
            named = [ids.ids[i] for i in items[:2]]
            body = recommend(client, recent_items=session, include_categories=[category], exclude_items=named)
            got = body["items"]
            assert isinstance(got, list)
            assert len(got) == K, f"{category}: {len(got)} items where {len(items)} exist"
            assert all(category in item["categories"] for item in got)
            assert not {item["item_id"] for item in got} & {*session, *named}, "nothing excluded comes back"
            scores = [item["score"] for item in got]
            assert scores == sorted(scores, reverse=True), "best first"
            history = ids.encode(session)
            # Exact search masks every score, so the rest of the catalogue as an exclusion list is the reference.
            want, _ = exact.recommend([history], k=K, exclude=[np.concatenate([ids.encode(named), rest])])
            assert [item["item_id"] for item in got] == ids.decode(want[0]), "the best k of the category"


def test_exclude_and_include_categories_together_on_the_ann_path(client: TestClient, catalogue: Dataset) -> None:
    by_category = items_by_category(catalogue)
    names = sorted(by_category)
    for j, session in enumerate(sessions(catalogue, 20)):
        wanted, unwanted = names[j % len(names)], names[(j + 1) % len(names)]
        both = np.intersect1d(by_category[wanted], by_category[unwanted])
        assert len(by_category[wanted]) - len(both) >= K + len(session)
        got = recommend(client, recent_items=session, include_categories=[wanted], exclude_categories=[unwanted])
        items = got["items"]
        assert isinstance(items, list) and len(items) == K
        assert all(wanted in i["categories"] and unwanted not in i["categories"] for i in items)
        # Excluding most of the catalogue's categories leaves a few hundred items, all of them far from some users.
        rest = [c for c in names if c not in (wanted, unwanted)]
        got = recommend(client, recent_items=session, exclude_categories=rest)
        items = got["items"]
        assert isinstance(items, list) and len(items) == K
        assert all(not set(i["categories"]) & set(rest) for i in items)
