"""The service's reports, as the Prometheus series the dashboards and alerts read."""

from __future__ import annotations

from prometheus_client import REGISTRY

from recengine.observability.observer import MetricsObserver


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_inference_is_recorded_with_how_the_call_ended() -> None:
    observer = MetricsObserver()
    name = "recengine_engine_inference_seconds_count"
    before = {o: value(name, engine="observed", outcome=o) for o in ("ok", "error", "timeout")}
    observer.inference("observed", 0.002, "ok")
    observer.inference("observed", 0.003, "ok")
    observer.inference("observed", 0.010, "error")
    observer.inference("observed", 0.050, "timeout")
    after = {o: value(name, engine="observed", outcome=o) for o in ("ok", "error", "timeout")}
    assert {o: after[o] - before[o] for o in after} == {"ok": 2, "error": 1, "timeout": 1}
    # the timed-out call's 50 ms lands above the 30 ms bucket, the others below it
    assert value("recengine_engine_inference_seconds_bucket", engine="observed", outcome="timeout", le="0.03") == 0


def test_cache_fallback_and_circuit_reports() -> None:
    observer = MetricsObserver()
    hits = value("recengine_cache_lookups_total", backend="memory", outcome="hit")
    misses = value("recengine_cache_lookups_total", backend="memory", outcome="miss")
    observer.cache("memory", True)
    observer.cache("memory", False)
    assert value("recengine_cache_lookups_total", backend="memory", outcome="hit") == hits + 1
    assert value("recengine_cache_lookups_total", backend="memory", outcome="miss") == misses + 1
    fallbacks = value("recengine_fallbacks_total", engine="observed", reason="no_history")
    observer.fallback("observed", "no_history")
    assert value("recengine_fallbacks_total", engine="observed", reason="no_history") == fallbacks + 1
    observer.circuit("observed", "half_open")
    assert value("recengine_circuit_state", engine="observed") == 1
