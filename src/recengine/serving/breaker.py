"""A circuit breaker per engine: stop calling an engine that keeps failing, probe it again later.

    closed ──N consecutive failures──▶ open ──reset_s elapsed──▶ half_open ──probe ok──▶ closed
                                         ▲                          │
                                         └────────probe fails───────┘

Only one probe is let through while half-open, so a struggling engine is not hit by a thundering herd.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Literal

State = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    def __init__(self, failures: int = 5, reset_s: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        if failures < 1:
            raise ValueError("failures must be ≥ 1")
        self.failures = failures
        self.reset_s = reset_s
        self._clock = clock
        self._lock = threading.Lock()
        self._consecutive = 0
        self._opened_at: float | None = None
        self._probing = False
        self._listeners: list[Callable[[State], None]] = []

    def on_change(self, listener: Callable[[State], None]) -> None:
        """Call ``listener(new_state)`` whenever the state changes (metrics hook)."""
        self._listeners.append(listener)

    @property
    def state(self) -> State:
        with self._lock:
            return self._state_locked()

    def _state_locked(self) -> State:
        if self._opened_at is None:
            return "closed"
        if self._clock() - self._opened_at >= self.reset_s:
            return "half_open"
        return "open"

    @property
    def consecutive_failures(self) -> int:
        """Failures since the last success: the circuit opens when this reaches ``failures``."""
        with self._lock:
            return self._consecutive

    def allow(self) -> bool:
        """May a call go through now? In half-open state only the first caller gets the probe."""
        with self._lock:
            state = self._state_locked()
            if state == "closed":
                return True
            if state == "half_open" and not self._probing:
                self._probing = True
                return True
            return False

    def record_success(self) -> None:
        with self._lock:
            changed = self._opened_at is not None
            self._consecutive = 0
            self._opened_at = None
            self._probing = False
        if changed:
            self._emit("closed")

    def record_failure(self) -> None:
        with self._lock:
            self._consecutive += 1
            was_probe = self._probing
            self._probing = False
            opens = was_probe or (self._opened_at is None and self._consecutive >= self.failures)
            if opens:
                self._opened_at = self._clock()
        if opens:
            self._emit("open")

    def reset(self) -> None:
        """Back to closed, e.g. after a new model version was loaded."""
        self.record_success()
        with self._lock:
            self._consecutive = 0

    def _emit(self, state: State) -> None:
        for listener in self._listeners:
            listener(state)
