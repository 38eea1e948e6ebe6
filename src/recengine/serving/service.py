"""The recommendation service: decide → cache → engine (off the event loop, in time) → fall back → answer.

No web framework here: ``api/`` translates HTTP to these calls and domain errors to problem documents.

    service = RecommendationService(registry, cache, history, config, max_inflight=2)
    answer = await service.recommend(RecommendRequest(user_id="u1", k=10))
    answer.engine, answer.fallback, answer.items  # which engine answered, why not the first choice, the items
    answer = await service.similar("item-7", k=10)

Both kinds of request walk their chain of engines in one loop (:meth:`RecommendationService._first_answer`): skip an
engine that is switched off, not loaded or behind an open circuit, answer from the cache when it can, else call the
engine through the guard (``serving/guard.py``: own threads, time budget, breaker) and move on when it fails. The
floor ends every chain and has no deadline, so something always comes back.

Every answer gets a ``recommendation_id`` (and, when the experiment chose the engine, its name and arm) and is handed
to the impression recorder (``serving/attribution.py``: a queue append). In an interleave experiment both engines
answer the same request through that loop and :func:`~recengine.serving.interleave.interleave_items` merges them.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from recengine.engines import FLOOR, SIMILAR_ORDER
from recengine.errors import EngineUnavailable, NotFound
from recengine.serving.attribution import ImpressionRecorder
from recengine.serving.cache import Cache, cache_key, params_hash
from recengine.serving.guard import EngineFailed, EngineGuard
from recengine.serving.history import HistoryStore
from recengine.serving.inference import recommend_rows, similar_row
from recengine.serving.interleave import interleave_items
from recengine.serving.observer import NullObserver, Observer
from recengine.serving.registry import LoadedModel, ModelRegistry
from recengine.serving.routing import Decision, RuntimeConfig, decide
from recengine.serving.types import Answer, RecommendRequest, decode_payload, encode_payload

#: How a job starts its engine call for one model; None when that model cannot take the request.
Prepare = Callable[[LoadedModel], Callable[[], Awaitable[Any]] | None]
#: What answered a job: (engine, from the cache, cached payload).
Result = tuple[str, bool, bytes]
#: The engine name of an interleaved answer (each item carries the engine it is credited to).
INTERLEAVE = "interleave"


@dataclass(slots=True)
class _Attempt:
    report_skips: bool
    """Say why each engine was passed over, or only why one that was tried failed (similar items: an engine
    that is off or does not know the item was never a candidate)."""
    failures: list[str] = field(default_factory=list)
    first: tuple[str, str] | None = None
    """(engine, reason kind) of the first engine passed over, for the fallback metric."""

    def fail(self, engine: str, kind: str, message: str) -> None:
        self.failures.append(f"{engine}: {message}")
        if self.first is None:
            self.first = (engine, kind)

    def skip(self, engine: str, kind: str, message: str) -> None:
        if self.report_skips:
            self.fail(engine, kind, message)

    def reason(self) -> str | None:
        return "; ".join(self.failures) if self.failures else None


@dataclass(slots=True)
class _Job:
    """One request on its way down the chain: how to key its cached answer and how to start each engine."""

    kind: str
    """``rec`` or ``sim``: the cache key's kind."""
    subject: str
    history_version: str
    params: str
    prepare: Prepare
    attempt: _Attempt
    request_id: str
    started: float
    user_id: str | None = None
    item_id: str | None = None
    catalogue_version: str = "0"


class Catalogue(Protocol):
    """What the service needs of the catalogue (``catalogue/view.py``): catch up with the store, and the version
    caught up to, which is part of every cache key."""

    @property
    def key(self) -> str: ...

    async def sync(self) -> None: ...


class NoCatalogue:
    key = "0"

    async def sync(self) -> None:
        return None


class RecommendationService:
    def __init__(
        self,
        registry: ModelRegistry,
        cache: Cache,
        history: HistoryStore,
        config: RuntimeConfig,
        *,
        max_k: int = 100,
        breaker_failures: int = 5,
        breaker_reset_s: float = 10.0,
        observer: Observer | None = None,
        max_batch: int = 32,
        max_inflight: int = 2,
        catalogue: Catalogue | None = None,
        impressions: ImpressionRecorder | None = None,
    ) -> None:
        self.registry = registry
        self.catalogue: Catalogue = catalogue or NoCatalogue()
        self.impressions = impressions
        """Where each answer's impression goes (None: not recorded)."""
        self.cache = cache
        self.history = history
        self.config = config
        self.max_k = max_k
        self.observer: Observer = observer or NullObserver()
        self.guard = EngineGuard(
            self.observer,
            breaker_failures=breaker_failures,
            breaker_reset_s=breaker_reset_s,
            max_inflight=max_inflight,
            max_batch=max_batch,
        )
        # A new model version starts with a closed circuit: the old version's failures say nothing about it.
        registry.on_swap(lambda model: self.guard.breaker(model.name).reset())

    def set_config(self, config: RuntimeConfig) -> None:
        self.config = config  # one assignment: every request sees the old or the new snapshot, never a mix

    def _clamp(self, k: int) -> int:
        return max(1, min(int(k), self.max_k))

    # ---- the two kinds of request -------------------------------------------------------------------------
    async def recommend(self, req: RecommendRequest, request_id: str | None = None) -> Answer:
        started = time.perf_counter()
        k = self._clamp(req.k)
        await self.catalogue.sync()  # an item added or retired on another replica counts from this request on
        if req.user_id is not None:
            stored = await self.history.get(req.user_id)
            items = stored.items + list(req.recent_items) if req.recent_items else stored.items
            hver = stored.version
        else:
            items, hver = list(req.recent_items), "anon"
        cfg = self.config
        decision = decide(cfg, req.user_id, len(items), req.engine)
        params = params_hash(
            {
                "k": k,
                "x": req.exclude_seen,
                "r": req.recent_items,
                "e": req.exclude_items,
                "ic": req.include_categories,
                "ec": req.exclude_categories,
            }
        )
        attempt = _Attempt(report_skips=True)
        if decision.note and req.engine is not None:
            attempt.fail(req.engine, "disabled", decision.note)
        row = (items, k, req)

        def prepare(model: LoadedModel) -> Callable[[], Awaitable[Any]]:
            return lambda: self.guard.batcher(model, recommend_rows).submit(row)

        job = _Job(
            "rec", req.user_id if req.user_id is not None else "", hver, params, prepare, attempt,
            request_id or uuid.uuid4().hex, started, user_id=req.user_id, catalogue_version=self.catalogue.key,
        )  # fmt: skip
        if decision.interleave is not None:
            answer = await self._interleave(job, decision, cfg, k)
        else:
            answer = await self._first_answer(job, decision.chain, cfg)
            if answer is not None and decision.experiment is not None:
                answer.experiment = (decision.experiment, decision.primary)
        if answer is None:
            raise EngineUnavailable(f"no engine could answer: {attempt.reason() or 'no model is loaded'}")
        self._record(answer)
        return answer

    async def _interleave(self, job: _Job, decision: Decision, cfg: RuntimeConfig, k: int) -> Answer | None:
        """Both engines' answers merged by team draft; one engine's alone when the other cannot answer (then not
        an interleaved answer: no experiment), the rest of the chain when neither can."""
        assert decision.interleave is not None and decision.experiment is not None
        pair = decision.interleave
        subs = [replace(job, attempt=_Attempt(report_skips=True)) for _ in pair]
        results = await asyncio.gather(
            *(self._first_result(sub, (name,), cfg) for sub, name in zip(subs, pair, strict=True))
        )
        for sub in subs:
            job.attempt.failures += sub.attempt.failures
            job.attempt.first = job.attempt.first or sub.attempt.first
        ra, rb = results
        if ra is not None and rb is not None:
            rid = uuid.uuid4().hex
            (va, items_a), (vb, items_b) = decode_payload(ra[2]), decode_payload(rb[2])
            items, credits = interleave_items(items_a, items_b, k, rid, pair)
            payload = encode_payload(f"{pair[0]}:{va}+{pair[1]}:{vb}", items)
            answer = self._answer(job, INTERLEAVE, ra[1] and rb[1], payload, rid)
            answer.experiment = (decision.experiment, INTERLEAVE)
            answer.credits = tuple(credits)
            return answer
        one = ra or rb
        if one is not None:
            return self._answer(job, *one)
        return await self._first_answer(job, [n for n in decision.chain if n not in pair], cfg)

    def _record(self, answer: Answer) -> None:
        if self.impressions is not None:
            self.impressions.record(answer)

    async def similar(self, item_id: str, k: int, engine: str | None = None, request_id: str | None = None) -> Answer:
        started = time.perf_counter()
        k = self._clamp(k)
        await self.catalogue.sync()
        cfg = self.config
        chain = [engine] if engine is not None else []
        chain += [n for n in SIMILAR_ORDER if n not in chain]
        attempt = _Attempt(report_skips=False)
        if engine is not None and not cfg.is_enabled(engine) and engine != FLOOR:
            attempt.fail(engine, "disabled", "disabled")

        def prepare(model: LoadedModel) -> Callable[[], Awaitable[Any]] | None:
            index = model.engine.item_ids.index(item_id)
            return None if index == 0 else self.guard.in_pool(model, similar_row, model, index, k)

        job = _Job(
            "sim", item_id, "-", params_hash({"k": k}), prepare, attempt, request_id or uuid.uuid4().hex, started,
            item_id=item_id, catalogue_version=self.catalogue.key,
        )  # fmt: skip
        answer = await self._first_answer(job, chain, cfg)
        if answer is not None:
            self._record(answer)
            return answer
        models = [m for m in map(self.registry.get, chain) if m is not None]
        if not any(m.engine.item_ids.index(item_id) for m in models):
            raise NotFound(f"item {item_id!r} is not in any loaded model's catalogue")
        raise EngineUnavailable(f"no engine could answer: {attempt.reason() or 'every engine is disabled'}")

    # ---- the fallback loop --------------------------------------------------------------------------------
    async def _first_answer(self, job: _Job, chain: Iterable[str], cfg: RuntimeConfig) -> Answer | None:
        """The answer of the first engine of ``chain`` that gives one; None when none does."""
        result = await self._first_result(job, chain, cfg)
        return None if result is None else self._answer(job, *result)

    async def _first_result(self, job: _Job, chain: Iterable[str], cfg: RuntimeConfig) -> Result | None:
        attempt = job.attempt
        for name in chain:
            # The floor's switch only keeps it out of experiments: as the last resort it is always usable.
            if not cfg.is_enabled(name) and name != FLOOR:
                attempt.skip(name, "disabled", "disabled")
                continue
            model = self.registry.get(name)
            if model is None:
                attempt.skip(name, "not_loaded", "no model loaded")
                continue
            start = job.prepare(model)
            if start is None:
                continue
            if not self.guard.allow(name):
                attempt.fail(name, "circuit_open", "circuit open")
                continue
            key = cache_key(
                job.kind, name, model.version, job.subject, job.history_version, job.params, job.catalogue_version
            )
            hit = await self.cache.get(key)
            self.observer.cache(self._backend(), hit is not None)
            if hit is not None:
                return name, True, hit
            try:
                # The floor is the answer of last resort: it gets no deadline, so something always comes back.
                timeout = None if name == FLOOR else cfg.engine_timeout_ms
                ranked = await self.guard.call(model, start, timeout)
            except EngineFailed as exc:
                attempt.fail(name, exc.kind, str(exc))
                continue
            payload = encode_payload(model.version, ranked)
            await self.cache.set(key, payload, cfg.cache_ttl_s)
            return name, False, payload
        return None

    def _backend(self) -> str:
        return str(getattr(self.cache, "backend", "memory"))

    def _answer(self, job: _Job, engine: str, cached: bool, payload: bytes, rid: str | None = None) -> Answer:
        version, items_json = decode_payload(payload)
        reason = job.attempt.reason()
        if job.attempt.first is not None:
            self.observer.fallback(*job.attempt.first)
        self.observer.answered("similar" if job.item_id is not None else "rec", engine, reason is not None)
        return Answer(
            request_id=job.request_id,
            user_id=job.user_id,
            item_id=job.item_id,
            engine=engine,
            model_version=version,
            fallback=reason,
            cached=cached,
            items_json=items_json,
            took_ms=round((time.perf_counter() - job.started) * 1000, 3),
            recommendation_id=rid or uuid.uuid4().hex,
        )

    # ---- status -------------------------------------------------------------------------------------------
    def engines(self) -> list[dict[str, Any]]:
        cfg = self.config
        out = []
        for name in self.registry.names:
            model = self.registry.get(name)
            state = self.guard.breaker(name).state
            if model is None:
                health = "not_loaded"
            elif state != "closed":
                health = f"circuit_{state}"
            else:
                health = "ok"
            out.append(
                {
                    "name": name,
                    "enabled": cfg.is_enabled(name),
                    "loaded": model is not None,
                    "model_version": model.version if model else None,
                    "n_items": model.n_items if model else None,
                    "health": health,
                    "circuit": state,
                    "error": self.registry.errors.get(name),
                }
            )
        return out

    async def close(self) -> None:
        self.guard.close()
