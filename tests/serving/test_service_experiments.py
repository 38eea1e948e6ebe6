"""What the service tells about an answer's experiment, what it records, and how it interleaves two engines."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from recengine.serving.attribution import ImpressionRecorder
from recengine.serving.cache import MemoryCache
from recengine.serving.history import MemoryHistoryStore
from recengine.serving.impressions import MemoryImpressionStore
from recengine.serving.registry import ModelRegistry
from recengine.serving.routing import RuntimeConfig
from recengine.serving.service import RecommendationService, RecommendRequest
from tests.fakes import FakeEngine

pytestmark = pytest.mark.anyio

ENABLED = {"popularity": True, "ease": True, "transformer": True, "neural": True}
SPLIT = RuntimeConfig(enabled=ENABLED, experiment_name="x", experiment_weights={"ease": 1.0})
INTERLEAVE = RuntimeConfig(
    enabled=ENABLED,
    experiment_name="x",
    experiment_interleave=("ease", "transformer"),
    engine_timeout_ms=200,
)


@pytest.fixture
async def store() -> MemoryImpressionStore:
    return MemoryImpressionStore()


@pytest.fixture
async def svc(tmp_path: Path, store: MemoryImpressionStore) -> AsyncIterator[RecommendationService]:
    reg = ModelRegistry(tmp_path / "artifacts")
    reg.put("popularity", FakeEngine("popularity", version="p1"))
    reg.put("transformer", FakeEngine("transformer", version="t1", needs_history=True))
    reg.put("ease", FakeEngine("ease", version="e1"))
    history = MemoryHistoryStore(50)
    service = RecommendationService(reg, MemoryCache(), history, SPLIT, max_k=20, impressions=ImpressionRecorder(store))
    await history.append("long", ["i1", "i2", "i3"])
    yield service
    await service.close()


def fake(svc: RecommendationService, name: str) -> FakeEngine:
    model = svc.registry.get(name)
    assert model is not None and isinstance(model.engine, FakeEngine)
    return model.engine


async def test_an_experiment_answer_names_its_arm_and_every_answer_has_its_own_id(
    svc: RecommendationService, store: MemoryImpressionStore
) -> None:
    first = await svc.recommend(RecommendRequest(user_id="long", k=3))
    cached = await svc.recommend(RecommendRequest(user_id="long", k=3))
    assert first.experiment == cached.experiment == ("x", "ease") and cached.cached
    assert first.recommendation_id != cached.recommendation_id and len(first.recommendation_id) == 32
    explicit = await svc.recommend(RecommendRequest(user_id="long", k=3, engine="popularity"))
    anonymous = await svc.recommend(RecommendRequest(recent_items=("i1",), k=3))
    assert explicit.experiment is None and anonymous.experiment is None  # the experiment did not decide those
    similar = await svc.similar("i1", 3)
    assert svc.impressions is not None
    await svc.impressions.flush()
    imps, _ = await store.scan("x")
    assert [i.recommendation_id for i in imps] == [first.recommendation_id, cached.recommendation_id]
    others = {i.recommendation_id: i for i in (await store.scan(None))[0]}
    assert set(others) == {explicit.recommendation_id, anonymous.recommendation_id, similar.recommendation_id}
    assert others[similar.recommendation_id].kind == "similar"


async def test_the_arm_stays_the_assignment_when_a_fallback_answers(svc: RecommendationService) -> None:
    fake(svc, "ease").mode = "raise"
    a = await svc.recommend(RecommendRequest(user_id="long", k=3))
    assert a.engine != "ease" and a.experiment == ("x", "ease")  # intention to treat: the readout counts the arm


async def test_interleaving_merges_both_engines_and_credits_each_item(
    svc: RecommendationService, store: MemoryImpressionStore
) -> None:
    svc.set_config(INTERLEAVE)
    a = await svc.recommend(RecommendRequest(user_id="long", k=6))
    assert a.engine == "interleave" and a.experiment == ("x", "interleave") and a.fallback is None
    assert a.model_version == "ease:e1+transformer:t1"
    assert sorted(a.credits) == ["ease"] * 3 + ["transformer"] * 3
    assert [i["engine"] for i in a.items] == list(a.credits)
    assert [i["rank"] for i in a.items] == list(range(1, 7))
    assert {i["item_id"] for i in a.items}.isdisjoint({"i1", "i2", "i3"})  # both engines excluded the history
    assert svc.impressions is not None
    await svc.impressions.flush()
    (imp,) = (await store.scan("x"))[0]
    assert imp.credits == a.credits and imp.arm == "interleave" and imp.engine == "interleave"


async def test_interleaving_with_one_engine_down_serves_the_other_outside_the_experiment(
    svc: RecommendationService,
) -> None:
    svc.set_config(INTERLEAVE)
    fake(svc, "transformer").mode = "raise"
    a = await svc.recommend(RecommendRequest(user_id="long", k=4))
    assert a.engine == "ease" and a.experiment is None and a.credits == ()
    assert (a.fallback or "").startswith("transformer:")
    fake(svc, "ease").mode = "raise"
    b = await svc.recommend(RecommendRequest(user_id="long", k=5))  # not the cached k=4 answer
    assert b.engine == "popularity" and b.experiment is None  # the rest of the chain
    assert "ease:" in (b.fallback or "") and "transformer:" in (b.fallback or "")


async def test_interleaving_needs_a_user(svc: RecommendationService) -> None:
    svc.set_config(INTERLEAVE)
    a = await svc.recommend(RecommendRequest(recent_items=("i1", "i2"), k=3))
    assert a.engine != "interleave" and a.experiment is None
