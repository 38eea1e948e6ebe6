"""The recommendation service: decide → cache → engine (off the event loop, in time) → fall back → answer.

No web framework here: ``api/`` translates HTTP to these calls and domain errors to problem documents.

    service = RecommendationService(registry, cache, history, events, config, max_inflight=2)
    answer = await service.recommend(RecommendRequest(user_id="u1", k=10))
    answer.engine, answer.fallback, answer.items  # which engine answered, why not the first choice, the items

Every engine call runs in a thread pool with its own time budget and behind its own circuit breaker. A failure, a
timeout or an open circuit moves the request to the next engine of the chain; popularity ends every chain.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal, Protocol

import numpy as np
import orjson

from recengine.errors import EngineUnavailable, NoHistory, NotFound
from recengine.serving.batching import Batcher
from recengine.serving.breaker import CircuitBreaker, State
from recengine.serving.cache import Cache, cache_key, params_hash
from recengine.serving.events import Event, EventLog
from recengine.serving.history import HistoryStore
from recengine.serving.registry import LoadedModel, ModelRegistry
from recengine.serving.routing import FLOOR, RuntimeConfig, decide

#: Preference order for "items similar to this one": embedding engines first, the floor last.
SIMILAR_ORDER: tuple[str, ...] = ("neural", "ease", "transformer", FLOOR)


class Observer(Protocol):
    """What the service reports; observability/metrics.py plugs in here. Every method must be cheap and
    safe."""

    def cache(self, backend: str, hit: bool) -> None: ...

    def inference(self, engine: str, seconds: float, outcome: Literal["ok", "error", "timeout"]) -> None: ...

    def fallback(self, engine: str, reason: str) -> None:
        """Once per request answered by a fallback: the engine passed over first, and why."""
        ...

    def answered(self, kind: str, engine: str, fallback: bool) -> None: ...

    def circuit(self, engine: str, state: State) -> None: ...


class NullObserver:
    def cache(self, backend: str, hit: bool) -> None:
        pass

    def inference(self, engine: str, seconds: float, outcome: Literal["ok", "error", "timeout"]) -> None:
        pass

    def fallback(self, engine: str, reason: str) -> None:
        pass

    def answered(self, kind: str, engine: str, fallback: bool) -> None:
        pass

    def circuit(self, engine: str, state: State) -> None:
        pass


@dataclass(frozen=True)
class RecommendRequest:
    user_id: str | None = None
    k: int = 10
    engine: str | None = None
    exclude_seen: bool = True
    recent_items: tuple[str, ...] = ()
    """Items of the current session, appended to the user's stored history (or the whole history when
    anonymous)."""
    exclude_items: tuple[str, ...] = ()
    include_categories: tuple[str, ...] = ()
    exclude_categories: tuple[str, ...] = ()


@dataclass
class Answer:
    """One response shape for every engine and both endpoints."""

    request_id: str
    engine: str
    model_version: str
    fallback: str | None
    cached: bool
    items_json: bytes
    """The items, already serialised: a cached answer is spliced into the response, never decoded."""
    took_ms: float
    user_id: str | None = None
    item_id: str | None = None

    @property
    def items(self) -> list[dict[str, Any]]:
        """``[{item_id, score, rank, title?, categories?}, …]``, best first."""
        items: list[dict[str, Any]] = orjson.loads(self.items_json)
        return items

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"request_id": self.request_id}
        if self.item_id is not None:
            out["item_id"] = self.item_id
        else:
            out["user_id"] = self.user_id
        out.update(
            engine=self.engine,
            model_version=self.model_version,
            fallback=self.fallback,
            cached=self.cached,
            items=orjson.Fragment(self.items_json),
            took_ms=self.took_ms,
        )
        return out

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())


@dataclass(frozen=True)
class IngestResult:
    accepted: int
    duplicates: int
    event_ids: list[str]


@dataclass
class _Attempt:
    failures: list[str] = field(default_factory=list)
    first: tuple[str, str] | None = None
    """(engine, reason kind) of the first engine passed over, for the fallback metric."""

    def fail(self, engine: str, kind: str, message: str) -> None:
        self.failures.append(f"{engine}: {message}")
        if self.first is None:
            self.first = (engine, kind)

    def reason(self) -> str | None:
        return "; ".join(self.failures) if self.failures else None


class RecommendationService:
    def __init__(
        self,
        registry: ModelRegistry,
        cache: Cache,
        history: HistoryStore,
        events: EventLog,
        config: RuntimeConfig,
        *,
        max_k: int = 100,
        breaker_failures: int = 5,
        breaker_reset_s: float = 10.0,
        observer: Observer | None = None,
        max_batch: int = 32,
        max_inflight: int = 2,
    ) -> None:
        self.registry = registry
        self.cache = cache
        self.history = history
        self.events = events
        self.config = config
        self.max_k = max_k
        self.observer: Observer = observer or NullObserver()
        self.breakers: dict[str, CircuitBreaker] = {}
        self.max_batch = max_batch
        self.max_inflight = max_inflight
        self._batchers: dict[str, Batcher] = {}
        # Bulkheads: each engine has threads of its own, so one that hangs can only exhaust its own pool — the
        # other engines, and the floor (which has no deadline), never queue behind it.
        self._executors: dict[str, ThreadPoolExecutor] = {}
        self._breaker_failures = breaker_failures
        self._breaker_reset_s = breaker_reset_s
        # A new model version starts with a closed circuit: the old version's failures say nothing about it.
        registry.on_swap(lambda model: self.breaker(model.name).reset())

    # ---- configuration ------------------------------------------------------------------------------------
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

    def set_config(self, config: RuntimeConfig) -> None:
        self.config = config  # one assignment: every request sees the old or the new snapshot, never a mix

    # ---- recommendations ----------------------------------------------------------------------------------
    async def recommend(self, req: RecommendRequest, request_id: str | None = None) -> Answer:
        started = time.perf_counter()
        rid = request_id or uuid.uuid4().hex
        k = max(1, min(int(req.k), self.max_k))
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
        subject = req.user_id if req.user_id is not None else ""
        attempt = _Attempt()
        if decision.note and req.engine is not None:
            attempt.fail(req.engine, "disabled", decision.note)
        for name in decision.chain:
            model = self._usable(name, cfg, attempt)
            if model is None:
                continue
            key = cache_key("rec", name, model.version, subject, hver, params)
            hit = await self.cache.get(key)
            self.observer.cache(self._backend(), hit is not None)
            if hit is not None:
                return self._answer(rid, req.user_id, None, name, attempt, True, hit, started)
            try:
                submit = partial(self._batcher(model).submit, (items, k, req))
                ranked = await self._call(model, cfg, submit, floor=name == FLOOR)
            except _EngineFailed as exc:
                attempt.fail(name, exc.kind, str(exc))
                continue
            payload = _payload(model.version, ranked)
            await self.cache.set(key, payload, cfg.cache_ttl_s)
            return self._answer(rid, req.user_id, None, name, attempt, False, payload, started)
        raise EngineUnavailable(f"no engine could answer: {attempt.reason() or 'no model is loaded'}")

    def _usable(self, name: str, cfg: RuntimeConfig, attempt: _Attempt) -> LoadedModel | None:
        # The floor's switch only keeps it out of experiments: as the last resort it is always usable.
        if not cfg.is_enabled(name) and name != FLOOR:
            attempt.fail(name, "disabled", "disabled")
            return None
        model = self.registry.get(name)
        if model is None:
            attempt.fail(name, "not_loaded", "no model loaded")
            return None
        if not self.breaker(name).allow():
            attempt.fail(name, "circuit_open", "circuit open")
            return None
        return model

    def _backend(self) -> str:
        return str(getattr(self.cache, "backend", "memory"))

    def executor_for(self, engine: str) -> ThreadPoolExecutor:
        """The engine's own thread pool: ``max_inflight`` threads (a batch each)."""
        executor = self._executors.get(engine)
        if executor is None:
            executor = ThreadPoolExecutor(max_workers=self.max_inflight, thread_name_prefix=f"engine-{engine}")
            self._executors[engine] = executor
        return executor

    def _batcher(self, model: LoadedModel) -> Batcher:
        batcher = self._batchers.get(model.name)
        if batcher is None or batcher.model is not model:
            executor = self.executor_for(model.name)
            batcher = Batcher(model, executor, self._recommend_batch, self.max_batch, self.max_inflight)
            self._batchers[model.name] = batcher
        return batcher

    async def _call(
        self, model: LoadedModel, cfg: RuntimeConfig, start: Callable[[], Awaitable[Any]], floor: bool = False
    ) -> Any:
        """Await ``start()`` (work in the pool) within the engine's time budget, feeding its circuit breaker."""
        breaker = self.breaker(model.name)
        began = time.perf_counter()
        future = start()
        # The floor is the answer of last resort: it gets no deadline, so something always comes back.
        timeout = None if floor else cfg.engine_timeout_ms / 1000.0
        try:
            result = await asyncio.wait_for(future, timeout)
        except TimeoutError:
            breaker.record_failure()
            self.observer.inference(model.name, time.perf_counter() - began, "timeout")
            raise _EngineFailed("timeout", f"no answer within {cfg.engine_timeout_ms:g} ms") from None
        except NoHistory:
            # Not the engine's fault: it cannot answer an empty history. The circuit stays as it is.
            breaker.record_success()
            raise _EngineFailed("no_history", "needs a history of known items") from None
        except Exception as exc:  # any engine bug becomes a fallback, never a 500
            breaker.record_failure()
            self.observer.inference(model.name, time.perf_counter() - began, "error")
            raise _EngineFailed("error", f"{type(exc).__name__}: {exc}") from None
        breaker.record_success()
        self.observer.inference(model.name, time.perf_counter() - began, "ok")
        return result

    def _recommend_batch(
        self, model: LoadedModel, rows: Sequence[tuple[Sequence[str], int, RecommendRequest]]
    ) -> list[list[dict[str, Any]] | BaseException]:
        """One engine call for many requests (in the pool); a row that cannot be answered gets its exception."""
        engine = model.engine
        ids = engine.item_ids
        out: list[list[dict[str, Any]] | BaseException] = [NoHistory("unanswered")] * len(rows)
        todo: list[int] = []
        histories: list[np.ndarray] = []
        excludes: list[np.ndarray] = []
        for i, (items, _, req) in enumerate(rows):
            hist = ids.encode(items)
            hist = hist[hist > 0]
            if engine.needs_history and hist.size == 0:
                out[i] = NoHistory(f"{model.name} needs at least one known item")
                continue
            extra = self._exclusions(model, req)
            parts = [p for p in (hist if req.exclude_seen else None, extra) if p is not None]
            todo.append(i)
            histories.append(hist)
            excludes.append(np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64))
        if not todo:
            return out
        k_max = min(max(rows[i][1] for i in todo), engine.n_items)
        idx, scores = engine.recommend(histories, k=k_max, exclude=excludes, exclude_history=False)
        for row, i in enumerate(todo):
            out[i] = self._items(model, idx[row], scores[row], rows[i][1])
        return out

    @staticmethod
    def _exclusions(model: LoadedModel, req: RecommendRequest) -> np.ndarray | None:
        parts: list[np.ndarray] = []
        if req.exclude_items:
            parts.append(model.engine.item_ids.encode(req.exclude_items))
        if req.exclude_categories:
            parts.append(model.items_in_categories(req.exclude_categories))
        if req.include_categories:
            allowed = model.items_in_categories(req.include_categories)
            everything = np.arange(1, model.n_items + 1, dtype=np.int64)
            parts.append(np.setdiff1d(everything, allowed, assume_unique=True))
        if not parts:
            return None
        out = np.concatenate(parts)
        return out[out > 0]

    @staticmethod
    def _items(model: LoadedModel, idx: np.ndarray, scores: np.ndarray, k: int) -> list[dict[str, Any]]:
        catalog = model.engine.items
        ids = catalog.ids.ids
        titles, cats = catalog.titles, catalog.categories
        out: list[dict[str, Any]] = []
        for i, s in zip(idx.tolist(), scores.tolist(), strict=True):
            if i <= 0 or not np.isfinite(s):
                continue  # padding: fewer candidates than k were left after filtering
            entry: dict[str, Any] = {"item_id": ids[i], "score": round(float(s), 6), "rank": len(out) + 1}
            if titles is not None and titles[i]:
                entry["title"] = titles[i]
            if cats is not None and cats[i]:
                entry["categories"] = list(cats[i])
            out.append(entry)
            if len(out) == k:
                break
        return out

    def _answer(
        self,
        rid: str,
        user_id: str | None,
        item_id: str | None,
        engine: str,
        attempt: _Attempt,
        cached: bool,
        payload: bytes,
        started: float,
    ) -> Answer:
        version, _, items_json = payload.partition(b"\n")
        reason = attempt.reason()
        if attempt.first is not None:
            self.observer.fallback(*attempt.first)
        self.observer.answered("similar" if item_id is not None else "rec", engine, reason is not None)
        return Answer(
            request_id=rid,
            user_id=user_id,
            item_id=item_id,
            engine=engine,
            model_version=version.decode(),
            fallback=reason,
            cached=cached,
            items_json=items_json,
            took_ms=round((time.perf_counter() - started) * 1000, 3),
        )

    # ---- similar items ------------------------------------------------------------------------------------
    async def similar(self, item_id: str, k: int, engine: str | None = None, request_id: str | None = None) -> Answer:
        started = time.perf_counter()
        rid = request_id or uuid.uuid4().hex
        k = max(1, min(int(k), self.max_k))
        cfg = self.config
        order = [engine] if engine is not None else []
        order += [n for n in SIMILAR_ORDER if n not in order]
        attempt = _Attempt()
        if engine is not None and not cfg.is_enabled(engine) and engine != FLOOR:
            attempt.fail(engine, "disabled", "disabled")
        known_anywhere = False
        for name in order:
            model = self.registry.get(name)
            if model is None:
                continue
            index = model.engine.item_ids.index(item_id)
            if index == 0:
                continue
            known_anywhere = True
            if not cfg.is_enabled(name) and name != FLOOR:
                continue
            if not self.breaker(name).allow():
                attempt.fail(name, "circuit_open", "circuit open")
                continue
            key = cache_key("sim", name, model.version, item_id, "-", params_hash({"k": k}))
            hit = await self.cache.get(key)
            self.observer.cache(self._backend(), hit is not None)
            if hit is not None:
                return self._answer(rid, None, item_id, name, attempt, True, hit, started)
            try:
                loop = asyncio.get_running_loop()
                start = partial(loop.run_in_executor, self.executor_for(name), self._similar_sync, model, index, k)
                ranked = await self._call(model, cfg, start, floor=name == FLOOR)
            except _EngineFailed as exc:
                attempt.fail(name, exc.kind, str(exc))
                continue
            payload = _payload(model.version, ranked)
            await self.cache.set(key, payload, cfg.cache_ttl_s)
            return self._answer(rid, None, item_id, name, attempt, False, payload, started)
        if not known_anywhere:
            raise NotFound(f"item {item_id!r} is not in any loaded model's catalogue")
        raise EngineUnavailable(f"no engine could answer: {attempt.reason() or 'every engine is disabled'}")

    def _similar_sync(self, model: LoadedModel, index: int, k: int) -> list[dict[str, Any]]:
        idx, scores = model.engine.similar_items(np.asarray([index], dtype=np.int64), k=min(k, model.n_items))
        keep = np.asarray(idx[0]) != index
        return self._items(model, np.asarray(idx[0])[keep], np.asarray(scores[0])[keep], k)

    # ---- events -------------------------------------------------------------------------------------------
    async def ingest(self, events: Sequence[Event]) -> IngestResult:
        """Write durably, then update the histories of the events that were new (retries change nothing)."""
        flags = await self.events.append(events)
        by_user: dict[str, list[str]] = {}
        for event, new in zip(events, flags, strict=True):
            if new:
                by_user.setdefault(event.user_id, []).append(event.item_id)
        for user_id, items in by_user.items():
            await self.history.append(user_id, items)
        accepted = sum(flags)
        return IngestResult(accepted, len(flags) - accepted, [e.event_id for e in events])

    async def replay_events(self, batch: int = 10_000) -> int:
        """Rebuild in-process histories from the durable log (after a restart); returns the events
        replayed."""
        after, total = 0, 0
        while True:
            rows = await self.events.read(after, batch)
            if not rows:
                return total
            by_user: dict[str, list[str]] = {}
            for _, e in rows:
                by_user.setdefault(e.user_id, []).append(e.item_id)
            for user_id, items in by_user.items():
                await self.history.append(user_id, items)
            after = rows[-1][0]
            total += len(rows)

    # ---- status -------------------------------------------------------------------------------------------
    def engines(self) -> list[dict[str, Any]]:
        cfg = self.config
        out = []
        for name in self.registry.names:
            model = self.registry.get(name)
            state = self.breaker(name).state
            enabled = cfg.is_enabled(name)
            if model is None:
                health = "not_loaded"
            elif state != "closed":
                health = f"circuit_{state}"
            else:
                health = "ok"
            out.append(
                {
                    "name": name,
                    "enabled": enabled,
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
        for executor in self._executors.values():
            executor.shutdown(wait=False, cancel_futures=True)


def _payload(version: str, items: list[dict[str, Any]]) -> bytes:
    """What the cache holds: ``<model version>\n<items as JSON>`` (a version never contains a newline)."""
    return version.replace("\n", " ").encode() + b"\n" + orjson.dumps(items)


class _EngineFailed(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
