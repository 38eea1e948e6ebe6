"""Opportunistic micro-batching: requests that queue up for an engine share one call to it."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from functools import partial
from typing import Any


class Batcher:
    """Opportunistic micro-batching of one loaded model's requests.

    A request that finds a pool thread free runs at once, alone — no added latency at low load. Requests that
    arrive while ``max_inflight`` batches are running wait, and go together in the next call (up to
    ``max_batch`` rows): a transformer answers 16 histories in a few times the cost of one, so throughput grows
    with load instead of the queue. A caller that gave up (its time budget ran out) is dropped before its row
    is computed.
    """

    def __init__(
        self,
        model: Any,
        executor: Executor,
        run: Callable[[Any, list[Any]], list[Any]],
        max_batch: int,
        max_inflight: int,
    ) -> None:
        self.model = model
        self.executor = executor
        self.run = run
        self.max_batch = max_batch
        self.max_inflight = max_inflight
        self._queue: deque[tuple[Any, asyncio.Future[Any]]] = deque()
        self._inflight = 0

    def submit(self, row: Any) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((row, future))
        self._pump(loop)
        return future

    def _pump(self, loop: asyncio.AbstractEventLoop) -> None:
        while self._queue and self._inflight < self.max_inflight:
            batch: list[tuple[Any, asyncio.Future[Any]]] = []
            while self._queue and len(batch) < self.max_batch:
                row, future = self._queue.popleft()
                if not future.done():
                    batch.append((row, future))
            if not batch:
                return
            self._inflight += 1
            work = loop.run_in_executor(self.executor, self.run, self.model, [row for row, _ in batch])
            work.add_done_callback(partial(self._deliver, loop, batch))

    def _deliver(
        self, loop: asyncio.AbstractEventLoop, batch: list[tuple[Any, asyncio.Future[Any]]], work: asyncio.Future[Any]
    ) -> None:
        self._inflight -= 1
        error = work.exception() if not work.cancelled() else asyncio.CancelledError()
        results = [error] * len(batch) if error is not None else work.result()
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
        self._pump(loop)
