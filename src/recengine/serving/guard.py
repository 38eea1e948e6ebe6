"""The engine guard: every engine call runs in the engine's own threads, within a time budget, behind its breaker.

    guard = EngineGuard(observer, breaker_failures=5, breaker_reset_s=10.0, max_inflight=2, max_batch=32)
    if guard.allow(model.name):
        result = await guard.call(model, partial(guard.batcher(model, run).submit, row), timeout_ms=50.0)

A failure, a timeout or an empty history for a sequence engine comes back as :class:`EngineFailed` with its kind, so
the service can move on to the next engine; only failures and timeouts count against the engine's circuit, once per
request: a batched call that raised is retried row by row (``serving/batching.py``), so a request fails — and counts
— only when its own row fails, never because a bad row shared its batch.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

from recengine.errors import NoHistory
from recengine.serving.batching import Batcher
from recengine.serving.breaker import CircuitBreaker, State
from recengine.serving.observer import Observer
from recengine.serving.registry import LoadedModel


class EngineFailed(Exception):
    """An engine did not answer; ``kind`` (``timeout``, ``error``, ``no_history``) labels the fallback metric."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class EngineGuard:
    def __init__(
        self,
        observer: Observer,
        *,
        breaker_failures: int = 5,
        breaker_reset_s: float = 10.0,
        max_inflight: int = 2,
        max_batch: int = 32,
    ) -> None:
        self.observer = observer
        self.breakers: dict[str, CircuitBreaker] = {}
        self.max_inflight = max_inflight
        self.max_batch = max_batch
        self._breaker_failures = breaker_failures
        self._breaker_reset_s = breaker_reset_s
        self._batchers: dict[str, Batcher] = {}
        # Bulkheads: each engine has threads of its own, so one that hangs can only exhaust its own pool — the
        # other engines, and the floor (which has no deadline), never queue behind it.
        self._executors: dict[str, ThreadPoolExecutor] = {}

    def breaker(self, engine: str) -> CircuitBreaker:
        b = self.breakers.get(engine)
        if b is None:
            b = CircuitBreaker(self._breaker_failures, self._breaker_reset_s)
            b.on_change(partial(self._circuit_changed, engine))
            self.breakers[engine] = b
            self.observer.circuit(engine, "closed")
        return b

    def _circuit_changed(self, engine: str, state: State) -> None:
        self.observer.circuit(engine, state)

    def allow(self, engine: str) -> bool:
        """May a call to ``engine`` go through now (its circuit is closed, or this is the half-open probe)?"""
        return self.breaker(engine).allow()

    def executor(self, engine: str) -> ThreadPoolExecutor:
        """The engine's own thread pool: ``max_inflight`` threads (a batch each)."""
        executor = self._executors.get(engine)
        if executor is None:
            executor = ThreadPoolExecutor(max_workers=self.max_inflight, thread_name_prefix=f"engine-{engine}")
            self._executors[engine] = executor
        return executor

    def batcher(self, model: LoadedModel, run: Callable[[LoadedModel, list[Any]], list[Any]]) -> Batcher:
        """The micro-batcher of the model being served (a new one after a model swap)."""
        batcher = self._batchers.get(model.name)
        if batcher is None or batcher.model is not model:
            breaker = self.breaker(model.name)
            batcher = Batcher(
                model, self.executor(model.name), run, self.max_batch, self.max_inflight,
                retry_alone=lambda: breaker.state != "open",
            )  # fmt: skip
            self._batchers[model.name] = batcher
        return batcher

    def in_pool(self, model: LoadedModel, fn: Callable[..., Any], *args: Any) -> Callable[[], Awaitable[Any]]:
        """``fn(*args)`` as one unbatched job in the model's pool, to hand to :meth:`call`."""

        def start() -> Awaitable[Any]:
            return asyncio.get_running_loop().run_in_executor(self.executor(model.name), fn, *args)

        return start

    async def call(self, model: LoadedModel, start: Callable[[], Awaitable[Any]], timeout_ms: float | None) -> Any:
        """Await ``start()`` (work in the pool) within ``timeout_ms`` (None: no limit), feeding the breaker."""
        breaker = self.breaker(model.name)
        began = time.perf_counter()
        future = start()
        try:
            result = await asyncio.wait_for(future, None if timeout_ms is None else timeout_ms / 1000.0)
        except TimeoutError:
            breaker.record_failure()
            self.observer.inference(model.name, time.perf_counter() - began, "timeout")
            raise EngineFailed("timeout", f"no answer within {timeout_ms:g} ms") from None
        except NoHistory:
            # Not the engine's fault: it cannot answer an empty history. The circuit stays as it is.
            breaker.record_success()
            raise EngineFailed("no_history", "needs a history of known items") from None
        except Exception as exc:  # any engine bug becomes a fallback, never a 500
            breaker.record_failure()
            self.observer.inference(model.name, time.perf_counter() - began, "error")
            raise EngineFailed("error", f"{type(exc).__name__}: {exc}") from None
        breaker.record_success()
        self.observer.inference(model.name, time.perf_counter() - began, "ok")
        return result

    def close(self) -> None:
        for executor in self._executors.values():
            executor.shutdown(wait=False, cancel_futures=True)
