"""Shared fixtures. Data sets are generated, never downloaded; everything runs on the CPU."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from recengine.data.dataset import Dataset
from recengine.data.synthetic import SynthConfig, generate
from recengine.data.transforms import build_dataset


@pytest.fixture(autouse=True, scope="session")
def _one_thread() -> Iterator[None]:
    """One intra-op thread: the test models are tiny, and on a shared 2-core machine a second thread mostly spins
    (a small training step ran 10–20× slower with two)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_dataset(tmp: Path, **kwargs: object) -> Dataset:
    raw, meta = generate(SynthConfig(**kwargs))  # type: ignore[arg-type]
    ds = build_dataset(raw, meta)
    ds.save(tmp)
    return Dataset.load(tmp)


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    """300 users × 120 items, strong sequential signal: fast enough for any unit test."""
    return make_dataset(tmp_path_factory.mktemp("small"), n_users=300, n_items=120, seed=1, p_sequential=0.7)


@pytest.fixture(scope="session")
def medium_dataset(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    """1500 users × 400 items: for tests that train a model and compare it with popularity."""
    return make_dataset(tmp_path_factory.mktemp("medium"), n_users=1500, n_items=400, seed=2, p_sequential=0.7)


@pytest.fixture(scope="session")
def redis_url() -> str:
    """A real Redis server (``.ci/run`` starts one). Missing: skip, or fail when RECENGINE_REQUIRE_REDIS=1."""
    url = os.environ.get("RECENGINE_TEST_REDIS_URL")
    reason = "no Redis: set RECENGINE_TEST_REDIS_URL (bash .ci/run starts one)"
    if not url:
        if os.environ.get("RECENGINE_REQUIRE_REDIS") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    import redis

    try:
        redis.Redis.from_url(url, socket_timeout=1).ping()
    except redis.RedisError as exc:
        if os.environ.get("RECENGINE_REQUIRE_REDIS") == "1":
            pytest.fail(f"Redis at {url} is not reachable: {exc}")
        pytest.skip(f"Redis at {url} is not reachable: {exc}")
    return url


@pytest.fixture(scope="session")
def bench_data() -> Path:
    """The real benchmark data sets (never copied into the repo); skipped where the folder is absent."""
    path = Path(os.environ.get("RECENGINE_BENCH_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    if not (path / "ml-100k" / "u.data").is_file():
        pytest.skip(f"benchmark data not found under {path} (set RECENGINE_BENCH_DATA)")
    return path
