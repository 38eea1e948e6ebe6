"""open_stores: what the settings ask for, built in one place, closed in one place."""

from __future__ import annotations

import asyncio
import socket
import uuid
from pathlib import Path

import pytest

from recengine.data.dataset import Dataset
from recengine.errors import ConfigError
from recengine.serving.cache import FailoverCache, MemoryCache
from recengine.serving.events import Event, RedisStreamEventLog, SqliteEventLog
from recengine.serving.history import FailoverHistoryStore, MemoryHistoryStore
from recengine.serving.redis import redis_client
from recengine.serving.stores import open_stores
from recengine.settings import Settings, load_settings

pytestmark = pytest.mark.anyio


def settings(tmp_path: Path, **sections: object) -> Settings:
    serving = {"artifacts_dir": str(tmp_path / "artifacts"), **sections.pop("serving", {})}  # type: ignore[dict-item]
    data = {"dir": str(tmp_path / "no-data"), **sections.pop("data", {})}  # type: ignore[dict-item]
    return load_settings(None, serving=serving, data=data, observability={"metrics": False}, **sections)


async def test_without_redis_everything_is_in_process_and_the_log_is_sqlite(tmp_path: Path) -> None:
    stores = await open_stores(settings(tmp_path, serving={"history_max_len": 7}, cache={"max_entries": 3}))
    assert isinstance(stores.cache, MemoryCache) and stores.cache.max_entries == 3
    assert isinstance(stores.history, MemoryHistoryStore) and stores.history.max_len == 7
    assert isinstance(stores.events, SqliteEventLog)
    assert stores.events.path == tmp_path / "artifacts" / "events.sqlite3"
    assert (stores.redis, stores.health, stores.degraded, stores.redis_status) == (None, None, False, "not configured")
    await stores.probe()  # nothing to probe
    assert await stores.events.append([Event("e1", "u", "i", "view", 1.7e9)]) == [True]
    await stores.close()
    assert await stores.history.get("u") == await MemoryHistoryStore(7).get("u")  # closed: live items dropped


async def test_histories_are_seeded_from_the_processed_data_set(tmp_path: Path, small_dataset: Dataset) -> None:
    stores = await open_stores(settings(tmp_path, data={"dir": str(small_dataset.path)}))
    user = small_dataset.users.ids[1]
    expected = small_dataset.items.ids.decode(small_dataset.sequences(max_split=2)[1])
    assert (await stores.history.get(user)).items == expected[-stores.history.max_len :]
    await stores.close()


async def test_with_redis_cache_and_histories_fail_over_behind_one_health(tmp_path: Path, redis_url: str) -> None:
    stores = await open_stores(settings(tmp_path, cache={"redis_url": redis_url}))
    assert isinstance(stores.cache, FailoverCache) and isinstance(stores.history, FailoverHistoryStore)
    assert stores.cache.health is stores.history.health is stores.health
    assert stores.redis is not None and not stores.degraded and stores.redis_status == "ok"
    key = f"test:{uuid.uuid4().hex}"
    await stores.cache.set(key, b"shared", 30)
    assert await stores.redis.get(key) == b"shared"
    assert isinstance(stores.events, SqliteEventLog)  # the log stays durable on disk unless asked otherwise
    await stores.close()


async def test_the_redis_stream_event_log_shares_the_client(tmp_path: Path, redis_url: str) -> None:
    stores = await open_stores(settings(tmp_path, cache={"redis_url": redis_url}, serving={"events_backend": "redis"}))
    assert isinstance(stores.events, RedisStreamEventLog) and stores.events.client is stores.redis
    await stores.close()


async def test_redis_down_at_start_up_serves_degraded_and_recovers_on_probe(tmp_path: Path, redis_url: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = f"redis://127.0.0.1:{port}/0"
    cache = {"redis_url": down, "redis_timeout_ms": 100, "retry_after_s": 0.05}
    stores = await open_stores(settings(tmp_path, cache=cache))
    assert stores.degraded and stores.redis_status.startswith("unreachable: ")
    assert stores.cache.backend == "memory"  # type: ignore[attr-defined]
    await stores.cache.set("k", b"v", 30)
    assert await stores.cache.get("k") == b"v"  # served from memory meanwhile
    assert stores.redis is not None
    await stores.redis.aclose()
    stores.redis = redis_client(redis_url, 500)  # the server is reachable now
    await asyncio.sleep(0.06)  # past the retry interval
    await stores.probe()
    assert not stores.degraded and stores.redis_status == "ok"
    await stores.close()


async def test_redis_event_log_without_redis_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"needs cache\.redis_url"):
        await open_stores(settings(tmp_path, serving={"events_backend": "redis"}))


async def test_store_sizes_count_live_histories_and_logged_events(tmp_path: Path) -> None:
    stores = await open_stores(settings(tmp_path))
    assert await stores.sizes() == (0, 0)
    await stores.events.append([Event("e1", "u1", "i1", "view", 1e9), Event("e2", "u1", "i2", "view", 1e9)])
    await stores.history.append("u1", ["i1", "i2"])
    assert await stores.sizes() == (1, 2)
    await stores.close()


async def test_store_sizes_while_redis_is_down_come_from_memory_and_leave_the_stream_unknown(
    tmp_path: Path,
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cache = {"redis_url": f"redis://127.0.0.1:{port}/0", "redis_timeout_ms": 100}
    stores = await open_stores(settings(tmp_path, cache=cache, serving={"events_backend": "redis"}))
    await stores.history.append("u1", ["i1"])  # lands in memory
    assert await stores.sizes() == (1, None)
    await stores.close()
