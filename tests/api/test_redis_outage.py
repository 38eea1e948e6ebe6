"""Redis stopped mid-test: every request still answers, /ready says degraded, and Redis comes back by itself."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from recengine.api.app import create_app
from recengine.settings import Settings

pytestmark = pytest.mark.redis


class PrivateRedis:
    """A redis-server of our own, so that this test may stop and restart it."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            cwd=self.workdir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_timeout=0.2)
        for _ in range(100):
            try:
                client.ping()
                return
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError("private redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(5)
            self.proc = None


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        if os.environ.get("RECENGINE_REQUIRE_REDIS") == "1":
            pytest.fail("redis-server is not installed")
        pytest.skip("redis-server is not installed")
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()


def wait_for(check: Callable[[], bool], seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


def test_redis_outage_degrades_and_recovers(
    private_redis: PrivateRedis, make_settings: Callable[..., Settings], known_user: str, known_item: str
) -> None:
    settings = make_settings(cache={"redis_url": private_redis.url, "retry_after_s": 0.2, "redis_timeout_ms": 200})
    direct = redis.Redis(port=private_redis.port, socket_timeout=1)
    with TestClient(create_app(settings)) as c:
        params = {"user_id": known_user, "k": 3}
        assert c.get("/ready").json()["status"] == "ready"
        assert c.get("/ready").json()["cache"] == "redis"
        assert c.get("/api/v1/recommendations", params=params).json()["cached"] is False
        assert c.get("/api/v1/recommendations", params=params).json()["cached"] is True
        assert direct.keys("recengine:rec:*")  # the answer lives in Redis
        assert c.post("/api/v1/events", json={"user_id": "outage-user", "item_id": known_item}).status_code == 200
        assert direct.lrange("recengine:hist:outage-user", 0, -1) == [known_item.encode()]

        private_redis.stop()
        for k in (3, 4, 5):
            r = c.get("/api/v1/recommendations", params={**params, "k": k})
            assert r.status_code == 200 and len(r.json()["items"]) == k
        again = c.get("/api/v1/recommendations", params={**params, "k": 5})
        assert again.status_code == 200 and again.json()["cached"] is True  # the in-process cache took over
        during = c.post("/api/v1/events", json={"user_id": "outage-user", "item_id": "item-during-outage"})
        assert during.status_code == 200 and during.json()["accepted"] == 1
        assert c.get("/api/v1/items/" + known_item + "/similar").status_code == 200
        ready = c.get("/ready")
        assert ready.status_code == 200
        assert ready.json()["status"] == "degraded" and ready.json()["cache"] == "memory"
        assert ready.json()["redis"].startswith("unreachable")

        private_redis.start()  # same port, empty data
        assert wait_for(lambda: c.get("/ready").json()["status"] == "ready")
        assert c.get("/ready").json()["cache"] == "redis"
        r = c.get("/api/v1/recommendations", params={**params, "k": 7})
        assert r.status_code == 200
        direct = redis.Redis(port=private_redis.port, socket_timeout=1)
        assert direct.keys("recengine:rec:*")  # answers go to Redis again
        # the event taken in during the outage reached the shared history once Redis was back
        c.get("/api/v1/recommendations", params={"user_id": "outage-user"})
        assert direct.lrange("recengine:hist:outage-user", 0, -1) == [b"item-during-outage"]


def test_starting_while_redis_is_down_serves_degraded(make_settings: Callable[..., Settings], known_user: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = make_settings(cache={"redis_url": f"redis://127.0.0.1:{port}/0", "redis_timeout_ms": 100})
    with TestClient(create_app(settings)) as c:
        assert c.get("/ready").json()["status"] == "degraded"
        assert c.get("/api/v1/recommendations", params={"user_id": known_user}).status_code == 200


def test_redis_events_backend_without_redis_is_a_config_error(make_settings: Callable[..., Settings]) -> None:
    from recengine.errors import ConfigError

    with (
        pytest.raises(ConfigError, match="redis_url"),
        TestClient(create_app(make_settings(serving={"events_backend": "redis"}))),
    ):
        pass


def test_shared_overrides_reach_another_replica(
    redis_url: str, make_settings: Callable[..., Settings], known_user: str
) -> None:
    from tests.api.gateway_helpers import ADMIN_KEY

    redis.Redis.from_url(redis_url).delete("recengine:runtime_overrides")
    settings = make_settings(cache={"redis_url": redis_url}, serving={"reload_poll_s": 0.05})
    with TestClient(create_app(settings)) as a, TestClient(create_app(settings)) as b:
        r = a.patch("/api/v1/admin/config", headers={"X-API-Key": ADMIN_KEY}, json={"engines.ease.enabled": False})
        assert r.status_code == 200

        def b_sees_it() -> bool:
            answer = b.get("/api/v1/recommendations", params={"user_id": known_user, "k": 2}).json()
            return bool(answer["engine"] == "popularity")

        assert wait_for(b_sees_it)
    redis.Redis.from_url(redis_url).delete("recengine:runtime_overrides")


def test_redis_streams_event_log_backend(redis_url: str, make_settings: Callable[..., Settings]) -> None:
    import uuid

    client = redis.Redis.from_url(redis_url)
    before = client.xlen("recengine:events") if client.exists("recengine:events") else 0
    settings = make_settings(cache={"redis_url": redis_url}, serving={"events_backend": "redis"})
    event_id = f"stream-{uuid.uuid4().hex}"
    with TestClient(create_app(settings)) as c:
        body = {"user_id": "stream-user", "item_id": "i1", "event_id": event_id}
        assert c.post("/api/v1/events", json=body).json()["accepted"] == 1
        assert c.post("/api/v1/events", json=body).json()["duplicates"] == 1
    assert client.xlen("recengine:events") == before + 1
