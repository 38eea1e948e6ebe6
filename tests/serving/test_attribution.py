"""The impression recorder (off the request path, never failing it) and the attributor (by id, by window)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import orjson
import pytest

from recengine.errors import StorageUnavailable
from recengine.serving.attribution import Attributor, ImpressionRecorder
from recengine.serving.events import Event
from recengine.serving.impressions import Impression, MemoryImpressionStore
from recengine.serving.types import Answer

pytestmark = pytest.mark.anyio


def answer(rid: str, user: str | None = "u1", items: Sequence[str] = ("a", "b", "c"), **kw: object) -> Answer:
    rows = [{"item_id": i, "score": 1.0, "rank": n} for n, i in enumerate(items, start=1)]
    return Answer(
        request_id="req", engine=str(kw.pop("engine", "ease")), model_version="v1", fallback=None, cached=False,
        items_json=orjson.dumps(rows), took_ms=1.0, user_id=user, recommendation_id=rid, **kw,  # type: ignore[arg-type]
    )  # fmt: skip


class BrokenStore(MemoryImpressionStore):
    def __init__(self) -> None:
        super().__init__()
        self.down = True

    async def add(self, impressions: Sequence[Impression]) -> None:
        if self.down:
            raise StorageUnavailable("down")
        await super().add(impressions)

    async def recent(self, user_id: str, since: float) -> list[Impression]:
        if self.down:
            raise StorageUnavailable("down")
        return await super().recent(user_id, since)


class SlowStore(MemoryImpressionStore):
    async def add(self, impressions: Sequence[Impression]) -> None:
        await asyncio.sleep(0.5)
        await super().add(impressions)


async def test_recording_queues_and_a_flush_writes_the_impression() -> None:
    store = MemoryImpressionStore()
    seen: list[tuple[str, str | None]] = []
    recorder = ImpressionRecorder(store, on_record=lambda engine, arm: seen.append((engine, arm)))
    recorder.record(answer("r1", experiment=("exp", "ease")))
    assert await store.get("r1") is None and recorder.pending == 1
    assert await recorder.flush() == 1
    imp = await store.get("r1")
    assert imp is not None
    assert (imp.user_id, imp.engine, imp.model_version, imp.items) == ("u1", "ease", "v1", ("a", "b", "c"))
    assert (imp.experiment, imp.arm, imp.kind) == ("exp", "ease", "rec")
    assert abs(imp.timestamp - time.time()) < 5
    assert seen == [("ease", "ease")]


async def test_recording_does_not_wait_for_a_slow_store() -> None:
    recorder = ImpressionRecorder(SlowStore())
    recorder.start()
    started = time.perf_counter()
    for i in range(100):
        recorder.record(answer(f"r{i}"))
        await asyncio.sleep(0)
    assert time.perf_counter() - started < 0.1  # the store takes 0.5 s a batch
    await recorder.close()
    assert recorder.recorded == 100 and recorder.pending == 0


async def test_a_store_that_is_down_loses_the_batch_not_the_request() -> None:
    store = BrokenStore()
    recorder = ImpressionRecorder(store)
    recorder.record(answer("r1"))
    assert await recorder.flush() == 0  # no exception
    assert recorder.dropped == 1 and recorder.pending == 0
    store.down = False
    recorder.record(answer("r2"))
    assert await recorder.flush() == 1 and await store.get("r2") is not None


async def test_a_full_queue_drops_new_impressions() -> None:
    recorder = ImpressionRecorder(MemoryImpressionStore(), max_pending=2)
    for i in range(5):
        recorder.record(answer(f"r{i}"))
    assert recorder.pending == 2 and recorder.dropped == 3


async def test_similar_items_answers_are_recorded_as_such() -> None:
    store = MemoryImpressionStore()
    recorder = ImpressionRecorder(store)
    recorder.record(answer("s1", user=None, item_id="a"))
    await recorder.flush()
    imp = await store.get("s1")
    assert imp is not None and imp.kind == "similar" and imp.user_id is None


# ---- attribution -------------------------------------------------------------------------------------------------
NOW = time.time()


def ev(eid: str, item: str, user: str = "u1", ts: float = 0.0) -> Event:
    return Event(eid, user, item, "click", NOW + ts)


async def setup(*impressions: Impression, window_s: float = 600.0) -> tuple[MemoryImpressionStore, Attributor, list]:
    store = MemoryImpressionStore()
    await store.add(impressions)
    credited: list[tuple[str, str | None]] = []
    return store, Attributor(store, None, window_s, lambda e, a: credited.append((e, a))), credited


def shown(rid: str, ts: float, items: tuple[str, ...] = ("a", "b", "c"), user: str | None = "u1", **kw: object):
    return Impression(rid, user, str(kw.pop("engine", "ease")), "v1", items, NOW + ts, **kw)  # type: ignore[arg-type]


async def test_an_event_naming_its_recommendation_is_attributed_to_it() -> None:
    # r2 is newer and also shows "b", but the event names r1.
    store, attributor, credited = await setup(
        shown("r1", -100, experiment="x", arm="ease"), shown("r2", -10, experiment="x", arm="ease")
    )
    assert await attributor.attribute([ev("e1", "b")], ["r1"]) == 1
    (att,) = (await store.scan("x"))[1]
    assert (att.recommendation_id, att.rank, att.how, att.credit, att.arm) == ("r1", 2, "id", "ease", "ease")
    assert credited == [("ease", "ease")]


async def test_without_an_id_the_newest_impression_in_the_window_that_showed_the_item_counts() -> None:
    store, attributor, _ = await setup(
        shown("r1", -300, ("a", "b")), shown("r2", -200, ("b", "c")), shown("r3", -100, ("x", "y"))
    )
    assert await attributor.attribute([ev("e1", "b")], [None]) == 1
    (att,) = (await store.scan(None))[1]
    assert (att.recommendation_id, att.rank, att.how) == ("r2", 1, "window")


async def test_nothing_is_attributed_outside_the_window_or_for_another_user() -> None:
    store, attributor, credited = await setup(
        shown("old", -1000, ("a",)), shown("theirs", -10, ("b",), user="u2"), window_s=600.0
    )
    assert await attributor.attribute([ev("e1", "a"), ev("e2", "b")], [None, None]) == 0
    # Naming another user's recommendation does not attribute it either.
    assert await attributor.attribute([ev("e3", "b")], ["theirs"]) == 0
    assert (await store.scan(None))[1] == [] and credited == []


async def test_an_id_whose_answer_did_not_show_the_item_falls_back_to_the_window() -> None:
    store, attributor, _ = await setup(shown("r1", -100, ("a",)), shown("r2", -50, ("z",)))
    assert await attributor.attribute([ev("e1", "a")], ["r2"]) == 1
    (att,) = (await store.scan(None))[1]
    assert (att.recommendation_id, att.how) == ("r1", "window")


async def test_an_unknown_id_is_not_an_error() -> None:
    _, attributor, _ = await setup()
    assert await attributor.attribute([ev("e1", "a")], ["f" * 32]) == 0


async def test_a_retry_is_attributed_once_and_answers_the_same() -> None:
    store, attributor, credited = await setup(shown("r1", -10))
    assert await attributor.attribute([ev("e1", "a")], [None]) == 1
    assert await attributor.attribute([ev("e1", "a")], [None]) == 1
    assert len((await store.scan(None))[1]) == 1 and len(credited) == 1


async def test_the_next_event_after_an_answer_sets_its_rank_once() -> None:
    store, attributor, _ = await setup(shown("r1", -100), shown("r2", -50, ("x", "y", "z")))
    # e1 is the next event after r2 (the newest answer before it): y is its rank 2; e2 comes after, too late.
    await attributor.attribute([ev("e1", "y", ts=-40), ev("e2", "x", ts=-30)], [None, None])
    r1, r2 = await store.get("r1"), await store.get("r2")
    assert r1 is not None and r1.next_rank is None
    assert r2 is not None and r2.next_rank == 2
    # An event for an item not shown still is the next event: rank 0, a miss for HR@K.
    store2, attributor2, _ = await setup(shown("r3", -10))
    await attributor2.attribute([ev("e3", "nope")], [None])
    r3 = await store2.get("r3")
    assert r3 is not None and r3.next_rank == 0


async def test_an_interleaved_answer_credits_the_engine_that_placed_the_item() -> None:
    store, attributor, credited = await setup(
        shown("m1", -10, ("a", "b"), engine="interleave", experiment="x", arm="interleave", credits=("ease", "neural"))
    )
    await attributor.attribute([ev("e1", "b")], ["m1"])
    (att,) = (await store.scan("x"))[1]
    assert att.credit == "neural" and credited == [("neural", "interleave")]


async def test_the_attributor_sees_this_workers_answers_before_their_clicks() -> None:
    store = MemoryImpressionStore()
    recorder = ImpressionRecorder(store)
    attributor = Attributor(store, recorder, 600.0)
    recorder.record(answer("r1"))  # not flushed yet
    assert await attributor.attribute([ev("e1", "c", ts=1)], ["r1"]) == 1


async def test_try_attribute_turns_a_store_outage_into_none() -> None:
    store = BrokenStore()
    attributor = Attributor(store, None, 600.0)
    with pytest.raises(StorageUnavailable):
        await attributor.attribute([ev("e1", "a")], [None])
    assert await attributor.try_attribute([ev("e1", "a")], [None]) is None


async def test_the_recorder_loop_writes_and_trims_to_the_retention() -> None:
    store = MemoryImpressionStore(retain_s=3600)
    await store.add([shown("old", -7200)])
    recorder = ImpressionRecorder(store, trim_every_s=0.0)
    recorder.start()
    recorder.record(answer("new"))
    for _ in range(50):
        await asyncio.sleep(0.05)
        if await store.get("new") is not None and await store.get("old") is None:
            break
    await recorder.close()
    assert await store.get("new") is not None and await store.get("old") is None


class HangingStore(MemoryImpressionStore):
    async def recent(self, user_id: str, since: float) -> list[Impression]:
        await asyncio.sleep(5)
        return []


async def test_a_hanging_store_costs_an_event_request_at_most_the_timeout() -> None:
    attributor = Attributor(HangingStore(), None, 600.0, timeout_s=0.2)
    started = time.perf_counter()
    assert await attributor.try_attribute([ev("e1", "a")], [None]) is None
    assert time.perf_counter() - started < 1.0
