"""The gateway's background upkeep: it stops when asked, even when a Redis call swallowed the cancellation."""

from __future__ import annotations

import asyncio
import contextlib
from types import SimpleNamespace

import pytest

from recengine.api.gateway import maintain

pytestmark = pytest.mark.anyio


class SwallowingGateway:
    """A gateway whose override sync behaves like a redis-py command that a cancellation hits at the wrong
    moment: the CancelledError never reaches the caller, the command just ends."""

    def __init__(self) -> None:
        self.settings = SimpleNamespace(observability=SimpleNamespace(metrics=False))
        self.registry = SimpleNamespace(stale=lambda: [])
        self.stores = SimpleNamespace(probe=self._nothing)
        self.in_call = asyncio.Event()
        self.rounds = 0

    async def _nothing(self) -> None:
        pass

    async def sync_overrides(self) -> None:
        self.rounds += 1
        self.in_call.set()
        with contextlib.suppress(asyncio.CancelledError):  # swallowed, as redis-py may
            await asyncio.sleep(0.05)


async def test_the_upkeep_stops_even_when_a_call_swallowed_its_cancellation() -> None:
    gw = SwallowingGateway()
    stop = asyncio.Event()
    task = asyncio.create_task(maintain(gw, 0.001, stop))  # type: ignore[arg-type]
    await gw.in_call.wait()
    stop.set()
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=2.0)
    assert done, "the upkeep kept running after it was stopped: the app's shutdown would hang"
    rounds = gw.rounds
    await asyncio.sleep(0.05)
    assert gw.rounds == rounds
