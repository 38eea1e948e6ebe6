"""Opportunistic micro-batching: requests that queue up for an engine share one call to it."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import partial
from typing import Any


@dataclass(slots=True)
class _Pending:
    row: Any
    future: asyncio.Future[Any]
    failed_with: BaseException | None = None
    """Set when the row's batch raised: the row is to run in a call of its own, and this is the error it gets
    if it may no longer be retried."""


class Batcher:
    """Opportunistic micro-batching of one loaded model's requests.

    A request that finds a pool thread free runs at once, alone — no added latency at low load. Requests that
    arrive while ``max_inflight`` batches are running wait, and go together in the next call (up to
    ``max_batch`` rows): a transformer answers 16 histories in a few times the cost of one, so throughput grows
    with load instead of the queue. A caller that gave up (its time budget ran out) is dropped before its row
    is computed.

    A call that raises says only that *some* row of it is bad, so its rows go to the head of the queue to run
    again one by one: only a row that fails alone gets an error, and each request's own outcome is what its
    caller (and so the engine's breaker) sees — one bad input counts as one failure, not one per request that
    shared its batch. The retries keep each caller's deadline (a caller that gave up meanwhile is skipped), and
    stop as soon as ``retry_alone()`` says no (the engine's circuit opened: it is broken, not one input), so a
    broken engine is not called once more per row.
    """

    def __init__(
        self,
        model: Any,
        executor: Executor,
        run: Callable[[Any, list[Any]], list[Any]],
        max_batch: int,
        max_inflight: int,
        retry_alone: Callable[[], bool] = lambda: True,
    ) -> None:
        self.model = model
        self.executor = executor
        self.run = run
        self.max_batch = max_batch
        self.max_inflight = max_inflight
        self.retry_alone = retry_alone
        self._queue: deque[_Pending] = deque()
        self._inflight = 0

    def submit(self, row: Any) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append(_Pending(row, future))
        self._pump(loop)
        return future

    def _pump(self, loop: asyncio.AbstractEventLoop) -> None:
        while self._queue and self._inflight < self.max_inflight:
            batch = self._next_batch()
            if not batch:
                return
            self._inflight += 1
            work = loop.run_in_executor(self.executor, self.run, self.model, [p.row for p in batch])
            work.add_done_callback(partial(self._deliver, loop, batch))

    def _next_batch(self) -> list[_Pending]:
        """The rows of the next call: the waiting rows in order, or one row that is to run alone."""
        batch: list[_Pending] = []
        while self._queue and len(batch) < self.max_batch:
            head = self._queue[0]
            if head.future.done():  # its caller gave up
                self._queue.popleft()
                continue
            if head.failed_with is None:
                batch.append(self._queue.popleft())
                continue
            if batch:
                break  # a row to retry alone waits for a call of its own
            self._queue.popleft()
            if self.retry_alone():
                return [head]
            head.future.set_exception(head.failed_with)
        return batch

    def _deliver(self, loop: asyncio.AbstractEventLoop, batch: list[_Pending], work: asyncio.Future[Any]) -> None:
        self._inflight -= 1
        if work.cancelled():
            results: list[Any] = [asyncio.CancelledError()] * len(batch)
        elif (error := work.exception()) is not None:
            waiting = [p for p in batch if not p.future.done()]
            if len(waiting) > 1 and self.retry_alone():
                # To the head of the queue, in order: they were asked for before anything queued since.
                self._queue.extendleft(_Pending(p.row, p.future, error) for p in reversed(waiting))
                self._pump(loop)
                return
            results = [error] * len(batch)
        else:
            results = work.result()
        for pending, result in zip(batch, results, strict=True):
            if pending.future.done():
                continue
            if isinstance(result, BaseException):
                pending.future.set_exception(result)
            else:
                pending.future.set_result(result)
        self._pump(loop)
