"""What the service reports as it answers, and the observer that listens to nothing.

``observability/observer.py`` turns these reports into Prometheus metrics; tests plug in a recorder.
"""

from __future__ import annotations

from typing import Literal, Protocol

from recengine.serving.breaker import State

#: How one engine call ended: answered, raised, or ran past its time budget.
Outcome = Literal["ok", "error", "timeout"]


class Observer(Protocol):
    """Every method must be cheap and must not raise."""

    def cache(self, backend: str, hit: bool) -> None: ...

    def inference(self, engine: str, seconds: float, outcome: Outcome) -> None: ...

    def fallback(self, engine: str, reason: str) -> None:
        """Once per request answered by a fallback: the engine passed over first, and why."""
        ...

    def answered(self, kind: str, engine: str, fallback: bool) -> None: ...

    def circuit(self, engine: str, state: State) -> None: ...


class NullObserver:
    def cache(self, backend: str, hit: bool) -> None:
        pass

    def inference(self, engine: str, seconds: float, outcome: Outcome) -> None:
        pass

    def fallback(self, engine: str, reason: str) -> None:
        pass

    def answered(self, kind: str, engine: str, fallback: bool) -> None:
        pass

    def circuit(self, engine: str, state: State) -> None:
        pass
