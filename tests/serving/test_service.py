"""The service end to end, without HTTP: routing → cache → engine in the pool → fallback → answer."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from recengine.errors import EngineUnavailable, NotFound
from recengine.serving.cache import MemoryCache
from recengine.serving.events import Event, SqliteEventLog
from recengine.serving.history import MemoryHistoryStore
from recengine.serving.ingest import EventIngest
from recengine.serving.registry import ModelRegistry
from recengine.serving.routing import RuntimeConfig
from recengine.serving.service import RecommendationService, RecommendRequest
from tests.fakes import FakeEngine

pytestmark = pytest.mark.anyio

ENABLED = {"popularity": True, "ease": True, "transformer": True, "neural": True}


class Recorder:
    def __init__(self) -> None:
        self.fallbacks: list[tuple[str, str]] = []
        self.cache_hits: list[bool] = []
        self.circuits: list[tuple[str, str]] = []
        self.inferences: list[tuple[str, str]] = []

    def cache(self, backend: str, hit: bool) -> None:
        self.cache_hits.append(hit)

    def inference(self, engine: str, seconds: float, outcome: str) -> None:
        self.inferences.append((engine, outcome))

    def fallback(self, engine: str, reason: str) -> None:
        self.fallbacks.append((engine, reason))

    def answered(self, kind: str, engine: str, fallback: bool) -> None:
        pass

    def circuit(self, engine: str, state: str) -> None:
        self.circuits.append((engine, state))


@pytest.fixture
async def svc(tmp_path: Path) -> AsyncIterator[RecommendationService]:
    reg = ModelRegistry(tmp_path / "artifacts")
    reg.put("popularity", FakeEngine("popularity", version="p1"))
    reg.put("transformer", FakeEngine("transformer", version="t1", needs_history=True, delay_s=0.3))
    reg.put("ease", FakeEngine("ease", version="e1"))
    history = MemoryHistoryStore(50)
    service = RecommendationService(
        reg,
        MemoryCache(),
        history,
        RuntimeConfig(enabled=ENABLED, short_history=2, engine_timeout_ms=60),
        max_inflight=2,
        max_k=20,
        breaker_failures=2,
        breaker_reset_s=60,
        observer=Recorder(),
    )
    await history.append("long", ["i1", "i2", "i3"])
    yield service
    await service.close()


def engine(svc: RecommendationService, name: str) -> FakeEngine:
    model = svc.registry.get(name)
    assert model is not None
    assert isinstance(model.engine, FakeEngine)
    return model.engine


async def test_long_history_goes_to_the_transformer_and_excludes_seen(svc: RecommendationService) -> None:
    a = await svc.recommend(RecommendRequest(user_id="long", k=3))
    assert (a.engine, a.model_version, a.fallback, a.cached) == ("transformer", "t1", None, False)
    assert [i["item_id"] for i in a.items] == ["i4", "i5", "i6"]
    assert [i["rank"] for i in a.items] == [1, 2, 3]
    assert a.items[0]["title"] == "Item 4" and a.items[0]["categories"] == ["even"]
    b = await svc.recommend(RecommendRequest(user_id="long", k=3, exclude_seen=False))
    assert [i["item_id"] for i in b.items] == ["i1", "i2", "i3"]


async def test_unknown_user_gets_the_cold_start_answer(svc: RecommendationService) -> None:
    a = await svc.recommend(RecommendRequest(user_id="never-seen", k=2))
    assert a.engine == "popularity" and a.fallback is None and len(a.items) == 2


async def test_engine_exception_falls_back_and_says_why(svc: RecommendationService) -> None:
    engine(svc, "transformer").mode = "raise"
    a = await svc.recommend(RecommendRequest(user_id="long", k=3))
    assert a.engine == "ease"
    assert a.fallback is not None and "transformer" in a.fallback and "RuntimeError" in a.fallback
    assert svc.observer.fallbacks == [("transformer", "error")]  # type: ignore[attr-defined]
    assert svc.observer.inferences == [("transformer", "error"), ("ease", "ok")]  # type: ignore[attr-defined]


async def test_timeout_falls_back_within_the_budget(svc: RecommendationService) -> None:
    engine(svc, "transformer").mode = "sleep"
    started = time.perf_counter()
    a = await svc.recommend(RecommendRequest(user_id="long", k=3))
    took = time.perf_counter() - started
    assert a.engine == "ease" and a.fallback is not None and "no answer within 60 ms" in a.fallback
    assert took < 0.25  # the sleeping engine takes 0.3 s; the request did not wait for it
    assert svc.observer.inferences == [("transformer", "timeout"), ("ease", "ok")]  # type: ignore[attr-defined]


async def test_circuit_opens_after_failures_and_skips_the_engine(svc: RecommendationService) -> None:
    t = engine(svc, "transformer")
    t.mode = "raise"
    for user in ("long",):
        await svc.recommend(RecommendRequest(user_id=user, k=3))
        await svc.recommend(RecommendRequest(user_id=user, k=4))
    assert svc.guard.breaker("transformer").state == "open"
    calls = t.calls
    a = await svc.recommend(RecommendRequest(user_id="long", k=5))
    assert a.engine == "ease" and (a.fallback or "").startswith("transformer: circuit open;")
    assert t.calls == calls  # not even tried
    assert ("transformer", "open") in svc.observer.circuits  # type: ignore[attr-defined]
    assert {e["name"]: e["health"] for e in svc.engines()}["transformer"] == "circuit_open"


async def test_everything_failing_ends_at_the_floor(svc: RecommendationService) -> None:
    engine(svc, "transformer").mode = "raise"
    engine(svc, "ease").mode = "raise"
    a = await svc.recommend(RecommendRequest(user_id="long", k=3))
    assert a.engine == "popularity"
    assert a.fallback is not None and "transformer" in a.fallback and "ease" in a.fallback


async def test_no_history_for_a_sequence_engine_is_a_fallback_not_a_failure(
    svc: RecommendationService,
) -> None:
    a = await svc.recommend(RecommendRequest(user_id="new", k=3, engine="transformer"))
    assert a.engine == "ease" and "needs a history" in (a.fallback or "")
    assert svc.guard.breaker("transformer").state == "closed"


async def test_floor_missing_and_everything_else_failing_is_engine_unavailable(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path)
    reg.put("ease", FakeEngine("ease"))
    engine_ = reg.get("ease")
    assert engine_ is not None
    engine_.engine.mode = "raise"  # type: ignore[attr-defined]
    s = RecommendationService(reg, MemoryCache(), MemoryHistoryStore(), RuntimeConfig(enabled=ENABLED))
    with pytest.raises(EngineUnavailable, match="no engine could answer"):
        await s.recommend(RecommendRequest(user_id="u", k=3, engine="ease"))
    await s.close()


async def test_cache_hit_then_invalidated_by_an_event(svc: RecommendationService, tmp_path: Path) -> None:
    first = await svc.recommend(RecommendRequest(user_id="long", k=3))
    second = await svc.recommend(RecommendRequest(user_id="long", k=3))
    assert (first.cached, second.cached) == (False, True)
    assert second.items == first.items and second.request_id != first.request_id
    other_params = await svc.recommend(RecommendRequest(user_id="long", k=4))
    assert not other_params.cached
    events = SqliteEventLog(tmp_path / "events.sqlite3")
    result = await EventIngest(events, svc.history).ingest([Event("ev1", "long", "i4", "view", 1.7e9)])
    await events.close()
    assert result.accepted == 1
    third = await svc.recommend(RecommendRequest(user_id="long", k=3))
    assert not third.cached
    assert "i4" not in [i["item_id"] for i in third.items]  # the event changed the answer at once


async def test_cache_invalidated_by_a_new_model_version(svc: RecommendationService) -> None:
    await svc.recommend(RecommendRequest(user_id="long", k=3))
    svc.registry.put("transformer", FakeEngine("transformer", version="t2", needs_history=True))
    a = await svc.recommend(RecommendRequest(user_id="long", k=3))
    assert not a.cached and a.model_version == "t2"


async def test_filters_and_session_items(svc: RecommendationService) -> None:
    a = await svc.recommend(
        RecommendRequest(recent_items=("i1", "i2", "unknown"), k=4, exclude_items=("i4",), include_categories=("odd",))
    )
    assert a.user_id is None and a.engine == "transformer"
    assert [i["item_id"] for i in a.items] == ["i3", "i5", "i7", "i9"]
    b = await svc.recommend(RecommendRequest(user_id="x", k=3, exclude_categories=("odd",)))
    assert [i["item_id"] for i in b.items] == ["i2", "i4", "i6"]
    c = await svc.recommend(RecommendRequest(user_id="x", k=3, include_categories=("no-such",)))
    assert c.items == []


async def test_k_is_clamped_to_max_k_and_catalogue(svc: RecommendationService) -> None:
    a = await svc.recommend(RecommendRequest(user_id="x", k=1000))
    assert len(a.items) == 20


async def test_experiment_assignment_is_honoured(svc: RecommendationService) -> None:
    svc.set_config(RuntimeConfig(enabled=ENABLED, experiment_name="x", experiment_weights={"ease": 1.0}))
    a = await svc.recommend(RecommendRequest(user_id="long", k=3))
    assert a.engine == "ease" and a.fallback is None


async def test_disabled_engine_is_skipped(svc: RecommendationService) -> None:
    svc.set_config(RuntimeConfig(enabled={**ENABLED, "transformer": False}, short_history=2))
    a = await svc.recommend(RecommendRequest(user_id="long", k=3))
    assert a.engine == "ease" and (a.fallback or "").startswith("transformer: disabled;")


async def test_similar_items(svc: RecommendationService) -> None:
    a = await svc.similar("i1", 3)
    assert a.engine == "ease" and a.item_id == "i1"
    assert [i["item_id"] for i in a.items] == ["i2", "i3", "i4"]
    assert (await svc.similar("i1", 3)).cached
    b = await svc.similar("i1", 2, engine="transformer")
    assert b.engine == "transformer"
    with pytest.raises(NotFound):
        await svc.similar("nope", 3)
    engine(svc, "ease").mode = "raise"
    c = await svc.similar("i2", 3)
    assert c.engine == "transformer" and "ease" in (c.fallback or "")


class BatchRecorder(FakeEngine):
    """Remembers how many histories each call carried; slow enough for requests to pile up."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.batch_sizes: list[int] = []

    def score(self, histories):  # type: ignore[no-untyped-def]
        self.batch_sizes.append(len(histories))
        time.sleep(0.02)
        return super().score(histories)


async def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(tmp_path: Path) -> None:
    import asyncio

    reg = ModelRegistry(tmp_path)
    engine_ = BatchRecorder("ease", version="b1")
    reg.put("ease", engine_)
    history = MemoryHistoryStore(50)
    for u in range(12):
        await history.append(f"u{u}", [f"i{j}" for j in range(1, u % 5 + 2)])
    s = RecommendationService(
        reg, MemoryCache(), history, RuntimeConfig(enabled=ENABLED, engine_timeout_ms=5000),
        max_inflight=1, max_batch=8,
    )  # fmt: skip
    engine_.batch_sizes.clear()
    reqs = [RecommendRequest(user_id=f"u{u}", k=2 + u % 3, engine="ease") for u in range(12)]
    answers = await asyncio.gather(*(s.recommend(r) for r in reqs))
    assert max(engine_.batch_sizes) > 1 and max(engine_.batch_sizes) <= 8 and sum(engine_.batch_sizes) == 12
    for u, (req, a) in enumerate(zip(reqs, answers, strict=True)):
        seen = u % 5 + 1
        assert a.engine == "ease" and len(a.items) == req.k
        assert a.items[0]["item_id"] == f"i{seen + 1}"  # its own history was excluded, nobody else's
    await s.close()


async def test_the_floor_answers_while_a_hung_engine_fills_the_pool(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path)
    reg.put("popularity", FakeEngine("popularity"))
    hung = FakeEngine("ease", delay_s=0.5)
    reg.put("ease", hung)
    hung.mode = "sleep"
    s = RecommendationService(
        reg, MemoryCache(), MemoryHistoryStore(), RuntimeConfig(enabled=ENABLED, engine_timeout_ms=30),
        max_inflight=1,
    )  # fmt: skip
    started = time.perf_counter()
    a = await s.recommend(RecommendRequest(user_id="u", k=3, engine="ease"))
    assert a.engine == "popularity" and time.perf_counter() - started < 0.3  # not behind the 0.5 s sleeper
    await s.close()


async def test_a_hung_engine_only_exhausts_its_own_threads(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path)
    reg.put("popularity", FakeEngine("popularity"))
    reg.put("transformer", FakeEngine("transformer"))
    hung = FakeEngine("ease", delay_s=0.6)
    reg.put("ease", hung)
    hung.mode = "sleep"
    cfg = RuntimeConfig(enabled=ENABLED, engine_timeout_ms=40, fallback=("ease", "transformer"))
    s = RecommendationService(reg, MemoryCache(), MemoryHistoryStore(), cfg, max_inflight=1)
    first = await s.similar("i1", 3, engine="ease")  # ease's only thread is now asleep
    assert first.engine != "ease" and "ease: no answer within 40 ms" in (first.fallback or "")
    started = time.perf_counter()
    sim = await s.similar("i2", 3, engine="ease")
    rec = await s.recommend(RecommendRequest(recent_items=("i1",), k=3, engine="ease"))
    assert sim.engine in ("transformer", "popularity") and rec.engine == "transformer"
    assert time.perf_counter() - started < 0.3  # neither waited for ease's sleeping thread
    await s.close()


async def test_a_batch_mixing_exclude_seen_answers_each_request_its_own_way(tmp_path: Path) -> None:
    import asyncio

    reg = ModelRegistry(tmp_path)
    engine_ = BatchRecorder("ease", version="b1")
    reg.put("ease", engine_)
    history = MemoryHistoryStore(50)
    await history.append("u", ["i1", "i2"])
    s = RecommendationService(
        reg, MemoryCache(), history, RuntimeConfig(enabled=ENABLED, engine_timeout_ms=5000), max_inflight=1
    )
    engine_.batch_sizes.clear()
    flags = [True, False, True, False, True]
    answers = await asyncio.gather(
        *(s.recommend(RecommendRequest(user_id="u", k=2, engine="ease", exclude_seen=f)) for f in flags)
    )
    assert sum(engine_.batch_sizes) == len(flags) and len(engine_.batch_sizes) < len(flags)  # some were batched
    for flag, a in zip(flags, answers, strict=True):
        assert [i["item_id"] for i in a.items] == (["i3", "i4"] if flag else ["i1", "i2"])
    await s.close()


async def test_an_item_known_only_to_switched_off_engines_is_unavailable_not_unknown(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path)
    reg.put("ease", FakeEngine("ease"))
    s = RecommendationService(
        reg, MemoryCache(), MemoryHistoryStore(), RuntimeConfig(enabled={**ENABLED, "ease": False})
    )
    with pytest.raises(EngineUnavailable, match="every engine is disabled"):
        await s.similar("i1", 3)
    with pytest.raises(NotFound):
        await s.similar("nope", 3)
    await s.close()
