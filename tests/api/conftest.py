from __future__ import annotations

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
from tests.api.gateway_helpers import ADMIN_KEY


@pytest.fixture(scope="session")
def trained_artifacts(small_dataset: Dataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Popularity and EASE trained on the small data set, in the artifacts layout (read-only for tests)."""
    root = tmp_path_factory.mktemp("artifacts")
    pop = Popularity.fit(small_dataset)
    pop.config["version"] = "p1"
    set_current(pop.save(version_dir(root, "popularity", "p1")))
    ease = EASE.fit(small_dataset, EaseSettings(lambdas=[50.0]))
    ease.config["version"] = "e1"
    set_current(ease.save(version_dir(root, "ease", "e1")))
    return root


@pytest.fixture
def make_settings(small_dataset: Dataset, trained_artifacts: Path, tmp_path: Path) -> Callable[..., Settings]:
    def make(**sections: Any) -> Settings:
        serving = {
            "artifacts_dir": str(trained_artifacts),
            "events_db": str(tmp_path / "events.sqlite3"),
            "admin_api_key": ADMIN_KEY,
            "reload_poll_s": 0,
            **sections.pop("serving", {}),
        }
        data = {"dir": str(small_dataset.path), **sections.pop("data", {})}
        obs = {"log_level": "ERROR", **sections.pop("observability", {})}
        # Never the shared artifacts folder: a test that writes items must not change another test's catalogue.
        catalogue = {"db": str(tmp_path / "catalogue.sqlite3"), **sections.pop("catalogue", {})}
        return load_settings(None, serving=serving, data=data, observability=obs, catalogue=catalogue, **sections)

    return make


@pytest.fixture
def client(make_settings: Callable[..., Settings]) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings()), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def known_user(small_dataset: Dataset) -> str:
    return small_dataset.users.ids[1]


@pytest.fixture
def known_item(small_dataset: Dataset) -> str:
    return small_dataset.items.ids.ids[1]
