"""Fixtures of the reliability suite (marker ``reliability``; run alone with ``pytest -m reliability``).

Bounded for CI on 2 cores: every load lasts RECENGINE_RELIABILITY_SECONDS (default 20 s instead of a 60 s soak) at
RECENGINE_RELIABILITY_RPS (default 100 requests/s); the whole suite takes about a minute and a half.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from recengine.data.dataset import Dataset
from recengine.data.synthetic import SynthConfig, generate
from recengine.data.transforms import build_dataset
from recengine.engines.artifact import set_current, version_dir
from recengine.engines.ease import EASE
from recengine.engines.popularity import Popularity
from recengine.settings import EaseSettings
from tests.reliability import reliability_harness as rh
from tests.reliability.reliability_harness import Deployment


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Deployment:
    """Popularity and EASE trained once per session on a small synthetic catalogue (400 users × 300 items)."""
    root = tmp_path_factory.mktemp("reliability")
    raw, meta = generate(SynthConfig(n_users=400, n_items=300, seed=3, p_sequential=0.7))
    build_dataset(raw, meta).save(root / "data")
    dataset = Dataset.load(root / "data")
    for cls, config in ((Popularity, None), (EASE, EaseSettings(lambdas=[100.0]))):
        model = cls.fit(dataset, config)
        set_current(model.save(version_dir(root / "artifacts", cls.name)))
    return Deployment(
        root=root,
        data_dir=root / "data",
        artifacts_dir=root / "artifacts",
        users=list(dataset.users.ids[1:]),
        items=list(dataset.items.ids.ids[1:]),
    )


@pytest.fixture
def deployment(trained: Deployment, tmp_path: Path) -> Deployment:
    """A private copy of the trained deployment: a test may corrupt its models or fill its event log."""
    shutil.copytree(trained.artifacts_dir, tmp_path / "artifacts")
    return Deployment(tmp_path, trained.data_dir, tmp_path / "artifacts", trained.users, trained.items)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[rh.RedisProcess]:
    """A private redis-server the test may kill; skipped without the binary unless RECENGINE_REQUIRE_REDIS=1."""
    try:
        server = rh.RedisProcess(tmp_path).start()
    except FileNotFoundError as exc:
        if os.environ.get("RECENGINE_REQUIRE_REDIS") == "1":
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[list[rh.ServerProcess]]:
    """Servers started by the test (append them); each is killed at the end. Their log tails are printed, which
    pytest shows only when the test failed."""
    servers: list[rh.ServerProcess] = []
    yield servers
    for server in servers:
        server.kill()
        print(f"---- {server.log_path.name} (last lines) ----\n{server.log_tail(30)}")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    text = rh.combined_summary()
    if text:
        terminalreporter.section("reliability figures")
        terminalreporter.write_line(text)
