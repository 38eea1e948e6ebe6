"""Talking to Redis: a client that gives up quickly, and the one policy for an outage — try, mark unhealthy, fall back.

    health = RedisHealth(retry_after_s=2.0)
    value = await health.attempt(lambda: client.get(key), lambda: memory.get(key))

Every user of one Redis shares one :class:`RedisHealth`: after a failure nobody calls Redis for ``retry_after_s`` (the
fallback answers at once instead of each request paying a timeout), and the first call that succeeds afterwards
marks Redis healthy again.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError

#: What a Redis outage looks like from redis.asyncio (timeouts surface as OSError subclasses in some paths).
REDIS_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError)

T = TypeVar("T")


def redis_client(url: str, timeout_ms: float) -> Redis:
    """A client that gives up quickly: a slow Redis must cost a request milliseconds, not seconds."""
    timeout = timeout_ms / 1000.0
    client: Redis = Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry_on_timeout=False,
        health_check_interval=0,
    )
    return client


class RedisHealth:
    """Shared by everything that talks to one Redis: after a failure, stay away for ``retry_after_s``."""

    def __init__(self, retry_after_s: float = 2.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.retry_after_s = retry_after_s
        self._clock = clock
        self._down_until = 0.0
        self.last_error: str | None = None
        self._listeners: list[Callable[[bool], None]] = []

    def on_change(self, listener: Callable[[bool], None]) -> None:
        """``listener(up)`` on every transition between reachable and unreachable."""
        self._listeners.append(listener)

    @property
    def degraded(self) -> bool:
        """True from a failure until the next successful call."""
        return self.last_error is not None

    def should_try(self) -> bool:
        return self._clock() >= self._down_until

    def failed(self, exc: BaseException) -> None:
        was_up = self.last_error is None
        self.last_error = f"{type(exc).__name__}: {exc}"
        self._down_until = self._clock() + self.retry_after_s
        if was_up:
            for listener in self._listeners:
                listener(False)

    def succeeded(self) -> None:
        if self.last_error is not None:
            self.last_error = None
            self._down_until = 0.0
            for listener in self._listeners:
                listener(True)

    async def attempt(self, call: Callable[[], Awaitable[T]], fallback: Callable[[], Awaitable[T]]) -> T:
        """``call()`` when Redis may be tried, else — or when it fails like an outage — ``fallback()``.

        The outcome of ``call`` marks Redis healthy or unhealthy; any other exception is a bug and propagates.
        """
        if self.should_try():
            try:
                value = await call()
            except REDIS_ERRORS as exc:
                self.failed(exc)
            else:
                self.succeeded()
                return value
        return await fallback()


async def nothing() -> None:
    """The fallback of a call whose only job was to reach Redis (a ping, a best-effort write)."""
