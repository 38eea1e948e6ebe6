"""The service's observer wired to the Prometheus metrics (``serving.observer.Observer``)."""

from __future__ import annotations

from recengine.observability import metrics
from recengine.observability.metrics import CircuitState, InferenceOutcome


class MetricsObserver:
    def cache(self, backend: str, hit: bool) -> None:
        metrics.record_cache(backend, "hit" if hit else "miss")

    def inference(self, engine: str, seconds: float, outcome: InferenceOutcome) -> None:
        metrics.observe_inference(engine, seconds, outcome)

    def fallback(self, engine: str, reason: str) -> None:
        metrics.record_fallback(engine, reason)

    def answered(self, kind: str, engine: str, fallback: bool) -> None:
        pass  # counted per HTTP request by the middleware, with the engine label

    def circuit(self, engine: str, state: CircuitState) -> None:
        metrics.set_circuit_state(engine, state)
