"""A readable summary of the process's own Prometheus metrics, for people (``GET /api/v1/stats``, the console).

    snapshot = collect()              # the samples now, merged across workers in multi-process mode
    summary = summarise(snapshot)     # request rate, cache hit ratio, latency percentiles per engine

Percentiles come from the latency histogram's buckets, interpolated linearly inside the bucket as PromQL's
``histogram_quantile`` does, so they agree with the Grafana dashboard to the bucket's resolution. The request rate is
measured between this call and the oldest earlier call of the last minute (the rate since the process started on
the first call).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

STARTED = time.time()
"""When this module was first imported: the app imports it as it is built, close enough to the process start."""
RATE_WINDOW_S = 60.0
#: Routes whose answers come from an engine: the latency the console reports is theirs.
ENGINE_ROUTES = ("/api/v1/recommendations", "/api/v1/items/{item_id}/similar")


@dataclass
class Snapshot:
    taken: float
    requests: dict[tuple[str, str, str], float] = field(default_factory=dict)
    """(route, engine, status) → count."""
    buckets: dict[tuple[str, str], dict[float, float]] = field(default_factory=dict)
    """(route, engine) → upper bound → cumulative count, summed over status codes."""
    cache: dict[tuple[str, str], float] = field(default_factory=dict)
    """(backend, outcome) → count."""
    fallbacks: float = 0.0


def _families() -> Iterable[Any]:
    import os

    from prometheus_client import REGISTRY, CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    from recengine.observability.metrics import MULTIPROC_ENV

    directory = os.environ.get(MULTIPROC_ENV)
    if not directory:
        return REGISTRY.collect()
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    return registry.collect()


def collect() -> Snapshot:
    snap = Snapshot(taken=time.time())
    for family in _families():
        for s in family.samples:
            labels = s.labels
            if s.name == "recengine_requests_total":
                rkey = (labels["route"], labels["engine"], labels["status"])
                snap.requests[rkey] = snap.requests.get(rkey, 0.0) + s.value
            elif s.name == "recengine_request_duration_seconds_bucket":
                per = snap.buckets.setdefault((labels["route"], labels["engine"]), {})
                le = float(labels["le"])
                per[le] = per.get(le, 0.0) + s.value
            elif s.name == "recengine_cache_lookups_total":
                key = (labels["backend"], labels["outcome"])
                snap.cache[key] = snap.cache.get(key, 0.0) + s.value
            elif s.name == "recengine_fallbacks_total":
                snap.fallbacks += s.value
    return snap


def quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """The ``q`` quantile of a cumulative histogram (upper bound → count), as ``histogram_quantile`` computes it."""
    if not buckets:
        return None
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower  # past the last finite bucket: its bound is the best one can say
            inside = count - below
            return lower + (bound - lower) * ((rank - below) / inside if inside > 0 else 1.0)
        lower, below = bound, count
    return lower


def _merge(histograms: Iterable[Mapping[float, float]]) -> dict[float, float]:
    out: dict[float, float] = {}
    for h in histograms:
        for bound, count in h.items():
            out[bound] = out.get(bound, 0.0) + count
    return out


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


class RateTracker:
    """Earlier totals of the last minute, to turn a counter into a rate between calls."""

    def __init__(self, window_s: float = RATE_WINDOW_S) -> None:
        self.window_s = window_s
        self._seen: deque[tuple[float, float]] = deque()
        self._lock = threading.Lock()

    def rate(self, now: float, total: float) -> float:
        with self._lock:
            while self._seen and now - self._seen[0][0] > self.window_s:
                self._seen.popleft()
            then, before = self._seen[0] if self._seen else (STARTED, 0.0)
            self._seen.append((now, total))
        elapsed = now - then
        return max(0.0, (total - before) / elapsed) if elapsed > 0 else 0.0


_RATES = RateTracker()


def summarise(snap: Snapshot, rates: RateTracker = _RATES) -> dict[str, Any]:
    """The figures of ``GET /api/v1/stats`` (see ``api/schemas_console.StatsResponse``)."""
    engine_requests = {k: v for k, v in snap.requests.items() if k[0] in ENGINE_ROUTES}
    total = sum(engine_requests.values())
    errors = sum(v for k, v in engine_requests.items() if k[2].startswith("5"))
    engines = sorted({k[1] for k in engine_requests if k[1] != "none"})
    hist_all = _merge(h for (route, _), h in snap.buckets.items() if route in ENGINE_ROUTES)
    by_engine = []
    for engine in engines:
        hist = _merge(h for (route, e), h in snap.buckets.items() if route in ENGINE_ROUTES and e == engine)
        by_engine.append(
            {
                "engine": engine,
                "requests": int(sum(v for k, v in engine_requests.items() if k[1] == engine)),
                "p50_ms": _ms(quantile(0.5, hist)),
                "p95_ms": _ms(quantile(0.95, hist)),
                "p99_ms": _ms(quantile(0.99, hist)),
            }
        )
    hits = sum(v for (_, outcome), v in snap.cache.items() if outcome == "hit")
    misses = sum(v for (_, outcome), v in snap.cache.items() if outcome == "miss")
    return {
        "uptime_s": round(max(0.0, snap.taken - STARTED), 3),
        "requests": {
            "total": int(total),
            "errors": int(errors),
            "per_s": round(rates.rate(snap.taken, total), 4),
            "fallbacks": int(snap.fallbacks),
        },
        "cache": {
            "hits": int(hits),
            "misses": int(misses),
            "hit_ratio": round(hits / (hits + misses), 4) if hits + misses else None,
        },
        "latency_ms": {
            "p50": _ms(quantile(0.5, hist_all)),
            "p95": _ms(quantile(0.95, hist_all)),
            "p99": _ms(quantile(0.99, hist_all)),
        },
        "engines": by_engine,
    }
