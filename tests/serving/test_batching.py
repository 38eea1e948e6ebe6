"""A batched engine call that raises: only the member that fails alone gets the error, and the breaker counts it once.

The engines here raise when a history holds the poisoned item, as a model might on one malformed input; the
pool has one thread, so the first request runs alone and the others queue up into one batch behind it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from recengine.serving.cache import MemoryCache
from recengine.serving.history import MemoryHistoryStore
from recengine.serving.registry import ModelRegistry
from recengine.serving.routing import RuntimeConfig
from recengine.serving.service import RecommendationService, RecommendRequest
from tests.fakes import FakeEngine

pytestmark = pytest.mark.anyio

ENABLED = {"popularity": True, "ease": True, "transformer": True, "neural": True}
POISON = "i13"  # item index 13 in the fakes' catalogue


class Poisoned(FakeEngine):
    """Raises on any call whose histories hold the poisoned item; remembers each call's size."""

    def __init__(self, *args: object, solo_delay_s: float = 0.0, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.batch_sizes: list[int] = []
        self.solo_delay_s = solo_delay_s

    def score(self, histories: Sequence[np.ndarray]) -> torch.Tensor:
        self.batch_sizes.append(len(histories))
        time.sleep(0.02 if len(histories) > 1 else self.solo_delay_s)  # slow enough for requests to pile up
        if self.mode == "raise" or any(13 in h.tolist() for h in histories):
            raise RuntimeError("poisoned history")
        return super().score(histories)


class Outcomes:
    """An observer that keeps each engine call's outcome."""

    def __init__(self) -> None:
        self.inferences: list[tuple[str, str]] = []

    def cache(self, backend: str, hit: bool) -> None:
        pass

    def inference(self, engine: str, seconds: float, outcome: str) -> None:
        self.inferences.append((engine, outcome))

    def fallback(self, engine: str, reason: str) -> None:
        pass

    def answered(self, kind: str, engine: str, fallback: bool) -> None:
        pass

    def circuit(self, engine: str, state: str) -> None:
        pass


async def service(
    tmp_path: Path, engine: Poisoned, *, breaker_failures: int = 3, timeout_ms: float = 5000
) -> tuple[RecommendationService, Outcomes]:
    reg = ModelRegistry(tmp_path)
    reg.put("ease", engine)
    reg.put("popularity", FakeEngine("popularity", version="p1"))
    history = MemoryHistoryStore(50)
    for u in range(8):
        await history.append(f"u{u}", [f"i{u + 1}"])
    await history.append("poisoned", ["i2", POISON])
    await history.append("poisoned-too", [POISON])
    observer = Outcomes()
    engine.batch_sizes.clear()  # forget the registry's smoke test
    s = RecommendationService(
        reg, MemoryCache(), history, RuntimeConfig(enabled=ENABLED, engine_timeout_ms=timeout_ms),
        breaker_failures=breaker_failures, breaker_reset_s=60, observer=observer, max_inflight=1, max_batch=16,
    )  # fmt: skip
    return s, observer


def ask(user: str, k: int = 3) -> RecommendRequest:
    return RecommendRequest(user_id=user, k=k, engine="ease")


async def test_one_poisoned_history_fails_only_its_own_request_and_counts_once(tmp_path: Path) -> None:
    engine = Poisoned("ease", version="e1")
    s, observer = await service(tmp_path, engine, breaker_failures=3)
    # u0 runs alone; the other six queue behind it and share one call, the poisoned one last.
    users = [f"u{u}" for u in range(6)] + ["poisoned"]
    answers = await asyncio.gather(*(s.recommend(ask(u)) for u in users))
    assert max(engine.batch_sizes) == 6  # the poisoned history really was batched with five others
    for user, answer in zip(users[:-1], answers[:-1], strict=True):
        assert answer.engine == "ease" and answer.fallback is None, user
        assert answer.items[0]["item_id"] != f"i{int(user[1:]) + 1}"  # its own history excluded
    poisoned = answers[-1]
    assert poisoned.engine == "popularity"
    assert (poisoned.fallback or "").startswith("ease: RuntimeError: poisoned history;")
    breaker = s.guard.breaker("ease")
    # One bad input is one failure, not one per request of its batch: 3 of them would have opened the circuit.
    assert breaker.consecutive_failures == 1 and breaker.state == "closed"
    assert observer.inferences.count(("ease", "error")) == 1
    assert observer.inferences.count(("ease", "ok")) == 6
    assert (await s.recommend(ask("u7"))).engine == "ease"  # still served
    await s.close()


async def test_a_batch_with_two_poisoned_histories_fails_exactly_those_two(tmp_path: Path) -> None:
    engine = Poisoned("ease", version="e1")
    s, observer = await service(tmp_path, engine, breaker_failures=5)
    users = ["u0", "u1", "poisoned", "u2", "poisoned-too", "u3"]
    answers = await asyncio.gather(*(s.recommend(ask(u)) for u in users))
    assert [a.engine for a in answers] == ["ease", "ease", "popularity", "ease", "popularity", "ease"]
    assert observer.inferences.count(("ease", "error")) == 2
    assert s.guard.breaker("ease").state == "closed"
    await s.close()


async def test_many_batches_each_with_a_poisoned_history_never_open_the_circuit(tmp_path: Path) -> None:
    engine = Poisoned("ease", version="e1")
    s, _ = await service(tmp_path, engine, breaker_failures=2)
    for k in (3, 4, 5):  # a new k each round: nothing comes from the cache
        users = ["u0", "u1", "u2", "poisoned", "u3", "u4"]
        answers = await asyncio.gather(*(s.recommend(ask(u, k)) for u in users))
        assert [a.engine for a in answers] == ["ease"] * 3 + ["popularity"] + ["ease"] * 2
    assert s.guard.breaker("ease").state == "closed"
    await s.close()


async def test_a_broken_engine_is_not_called_once_per_member_after_its_circuit_opens(tmp_path: Path) -> None:
    engine = Poisoned("ease", version="e1")
    s, observer = await service(tmp_path, engine, breaker_failures=2)
    engine.mode = "raise"  # after the registry's smoke test
    users = [f"u{u}" for u in range(8)]
    answers = await asyncio.gather(*(s.recommend(ask(u)) for u in users))
    assert all(a.engine == "popularity" for a in answers)  # every request still fell back
    assert s.guard.breaker("ease").state == "open"
    # u0 alone, then the batch of seven; its members are retried alone only until the circuit opens.
    assert engine.batch_sizes[:2] == [1, 7]
    assert len(engine.batch_sizes) <= 2 + 3, engine.batch_sizes
    assert observer.inferences.count(("ease", "error")) == 8
    await s.close()


async def test_retries_alone_stay_within_the_request_deadline(tmp_path: Path) -> None:
    # The batch fails fast; each member alone takes 50 ms; the budget is 300 ms: the last members run out of
    # time while waiting for their turn, fall back as timeouts, and are never computed.
    engine = Poisoned("ease", version="e1", solo_delay_s=0.05)
    s, observer = await service(tmp_path, engine, timeout_ms=300)
    users = ["u0", "poisoned", *(f"u{u}" for u in range(1, 8))]
    started = time.perf_counter()
    answers = await asyncio.gather(*(s.recommend(ask(u)) for u in users))
    assert time.perf_counter() - started < 1.0
    assert answers[0].engine == "ease" and answers[1].engine == "popularity"
    assert any(a.engine == "ease" for a in answers[2:])
    timed_out = [a for a in answers if (a.fallback or "").startswith("ease: no answer within 300 ms;")]
    assert timed_out and all(a.engine == "popularity" for a in timed_out)
    assert observer.inferences.count(("ease", "timeout")) == len(timed_out)
    assert len(engine.batch_sizes) < 2 + len(users) - 1  # the members whose caller gave up were skipped
    await asyncio.sleep(0.1)  # let the pool drain before closing
    await s.close()
