"""The one Redis outage policy: try, mark unhealthy and fall back, stay away for a while, recover by itself."""

from __future__ import annotations

import pytest

from recengine.serving.redis import RedisHealth, nothing, redis_client

pytestmark = pytest.mark.anyio


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Backend:
    """Counts calls; fails like an unreachable server while ``up`` is False."""

    def __init__(self) -> None:
        self.up = True
        self.calls = 0

    async def get(self) -> str:
        self.calls += 1
        if not self.up:
            raise ConnectionError("down")
        return "from redis"


async def from_memory() -> str:
    return "from memory"


async def test_a_failure_marks_redis_unhealthy_and_falls_back() -> None:
    health = RedisHealth(retry_after_s=2.0, clock=Clock())
    changes: list[bool] = []
    health.on_change(changes.append)
    backend = Backend()
    assert await health.attempt(backend.get, from_memory) == "from redis"
    assert not health.degraded and changes == []
    backend.up = False
    assert await health.attempt(backend.get, from_memory) == "from memory"
    assert health.degraded and health.last_error == "ConnectionError: down"
    assert changes == [False]


async def test_while_unhealthy_redis_is_not_called_until_the_retry_interval_passed() -> None:
    clock = Clock()
    health = RedisHealth(retry_after_s=2.0, clock=clock)
    backend = Backend()
    backend.up = False
    await health.attempt(backend.get, from_memory)
    backend.up = True
    clock.now = 1.9
    assert await health.attempt(backend.get, from_memory) == "from memory"
    assert backend.calls == 1  # the fallback answered at once, Redis was left alone
    assert health.degraded


async def test_the_first_success_after_the_interval_recovers() -> None:
    clock = Clock()
    health = RedisHealth(retry_after_s=2.0, clock=clock)
    changes: list[bool] = []
    health.on_change(changes.append)
    backend = Backend()
    backend.up = False
    await health.attempt(backend.get, from_memory)
    backend.up = True
    clock.now = 2.0
    assert await health.attempt(backend.get, from_memory) == "from redis"
    assert not health.degraded and health.last_error is None
    assert changes == [False, True]


async def test_a_failure_while_already_down_extends_the_wait_without_a_second_transition() -> None:
    clock = Clock()
    health = RedisHealth(retry_after_s=2.0, clock=clock)
    changes: list[bool] = []
    health.on_change(changes.append)
    backend = Backend()
    backend.up = False
    await health.attempt(backend.get, from_memory)
    clock.now = 2.0
    await health.attempt(backend.get, from_memory)  # the retry fails too
    assert backend.calls == 2 and changes == [False]
    clock.now = 3.9
    assert not health.should_try()


async def test_an_error_that_is_not_an_outage_propagates_and_changes_nothing() -> None:
    health = RedisHealth()

    async def bug() -> str:
        raise KeyError("a programming error, not an outage")

    with pytest.raises(KeyError):
        await health.attempt(bug, from_memory)
    assert not health.degraded


async def test_a_real_unreachable_server_is_an_outage() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = redis_client(f"redis://127.0.0.1:{port}/0", 100)
    health = RedisHealth()
    assert await health.attempt(client.ping, nothing) is None
    assert health.degraded
    await client.aclose()


async def test_a_reachable_server_answers(redis_url: str) -> None:
    client = redis_client(redis_url, 500)
    health = RedisHealth()
    assert await health.attempt(client.ping, nothing) is True
    assert not health.degraded
    await client.aclose()
