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


class Policy:
    """A RedisHealth on a hand-driven clock (retry after 2 s), the transitions it reported, and a backend."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.health = RedisHealth(retry_after_s=2.0, clock=self.clock)
        self.changes: list[bool] = []
        self.health.on_change(self.changes.append)
        self.backend = Backend()

    async def attempt(self) -> str:
        return await self.health.attempt(self.backend.get, from_memory)


@pytest.fixture
def policy() -> Policy:
    return Policy()


async def test_a_failure_marks_redis_unhealthy_and_falls_back(policy: Policy) -> None:
    assert await policy.attempt() == "from redis"
    assert not policy.health.degraded and policy.changes == []
    policy.backend.up = False
    assert await policy.attempt() == "from memory"
    assert policy.health.degraded and policy.health.last_error == "ConnectionError: down"
    assert policy.changes == [False]


async def test_while_unhealthy_redis_is_not_called_until_the_retry_interval_passed(policy: Policy) -> None:
    policy.backend.up = False
    await policy.attempt()
    policy.backend.up = True
    policy.clock.now = 1.9
    assert await policy.attempt() == "from memory"
    assert policy.backend.calls == 1  # the fallback answered at once, Redis was left alone
    assert policy.health.degraded


async def test_the_first_success_after_the_interval_recovers(policy: Policy) -> None:
    policy.backend.up = False
    await policy.attempt()
    policy.backend.up = True
    policy.clock.now = 2.0
    assert await policy.attempt() == "from redis"
    assert not policy.health.degraded and policy.health.last_error is None
    assert policy.changes == [False, True]


async def test_a_failure_while_already_down_extends_the_wait_without_a_second_transition(policy: Policy) -> None:
    policy.backend.up = False
    await policy.attempt()
    policy.clock.now = 2.0
    await policy.attempt()  # the retry fails too
    assert policy.backend.calls == 2 and policy.changes == [False]
    policy.clock.now = 3.9
    assert not policy.health.should_try()


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
