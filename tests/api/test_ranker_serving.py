"""The ranker behind the gateway: loaded from its artifact by the registry, answering ``engine=ranker``."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from recengine.api.app import create_app
from recengine.data.dataset import Dataset
from recengine.engines.artifact import set_current, version_dir
from recengine.engines.ranker import Ranker
from recengine.settings import RankerSettings, load_settings
from tests.api.gateway_helpers import ADMIN_KEY, assert_answer

TINY = RankerSettings(
    base_engines=["ease", "popularity"],
    candidates=20,
    folds=2,
    num_leaves=[4],
    learning_rates=[0.1],
    max_rounds=10,
    early_stopping=3,
    min_data_in_leaf=5,
    training_threads=1,
)


@pytest.fixture(scope="module")
def root(small_dataset: Dataset, trained_artifacts: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared popularity and EASE models plus a ranker over them."""
    root = tmp_path_factory.mktemp("ranker-artifacts")
    for name in ("popularity", "ease"):
        shutil.copytree(trained_artifacts / name, root / name)
    ranker = Ranker.fit(small_dataset, TINY, artifacts_dir=root)
    ranker.config["version"] = "r1"
    set_current(ranker.save(version_dir(root, "ranker", "r1")))
    return root


@pytest.fixture
def client(root: Path, small_dataset: Dataset, tmp_path: Path) -> Iterator[TestClient]:
    settings = load_settings(
        None,
        serving={
            "artifacts_dir": str(root),
            "events_db": str(tmp_path / "events.sqlite3"),
            "admin_api_key": ADMIN_KEY,
            "reload_poll_s": 0,
        },
        data={"dir": str(small_dataset.path)},
        observability={"log_level": "ERROR"},
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


def test_engine_ranker_is_answered_by_the_ranker_without_the_history(
    client: TestClient, known_user: str, small_dataset: Dataset
) -> None:
    r = client.get("/api/v1/recommendations", params={"user_id": known_user, "k": 5, "engine": "ranker"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert_answer(body, 5)
    assert body["engine"] == "ranker" and body["model_version"] == "r1" and body["fallback"] is None
    seen = set(small_dataset.items.ids.decode(small_dataset.sequences(max_split=2)[1]))
    assert not seen & {i["item_id"] for i in body["items"]}
    engines = {e["name"]: e for e in client.get("/api/v1/engines").json()["engines"]}
    assert engines["ranker"]["loaded"] and engines["ranker"]["model_version"] == "r1"


def test_a_user_without_history_is_answered_down_the_fallback_chain(client: TestClient) -> None:
    r = client.get("/api/v1/recommendations", params={"user_id": "nobody-new", "k": 5, "engine": "ranker"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert_answer(body, 5)
    assert body["engine"] in ("ease", "popularity"), "the ranker needs a history: the next engine that has none"
    assert body["fallback"].startswith("ranker: needs a history")
