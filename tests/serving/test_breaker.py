from __future__ import annotations

import pytest

from recengine.serving.breaker import CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_n_consecutive_failures_only() -> None:
    b = CircuitBreaker(failures=3, reset_s=10, clock=Clock())
    b.record_failure()
    b.record_failure()
    b.record_success()  # resets the count: failures must be consecutive
    b.record_failure()
    b.record_failure()
    assert b.state == "closed" and b.allow()
    b.record_failure()
    assert b.state == "open"
    assert not b.allow()


def test_half_open_lets_one_probe_through_and_closes_on_success() -> None:
    clock = Clock()
    seen: list[str] = []
    b = CircuitBreaker(failures=1, reset_s=5, clock=clock)
    b.on_change(seen.append)
    b.record_failure()
    clock.now += 4.9
    assert not b.allow()
    clock.now += 0.2
    assert b.state == "half_open"
    assert b.allow()  # the probe
    assert not b.allow()  # everyone else waits for its outcome
    b.record_success()
    assert b.state == "closed" and b.allow()
    assert seen == ["open", "closed"]


def test_failed_probe_reopens_for_another_full_period() -> None:
    clock = Clock()
    b = CircuitBreaker(failures=2, reset_s=5, clock=clock)
    b.record_failure()
    b.record_failure()
    clock.now += 5
    assert b.allow()
    b.record_failure()
    assert b.state == "open"
    clock.now += 4
    assert not b.allow()
    clock.now += 1
    assert b.allow()


def test_reset_closes() -> None:
    b = CircuitBreaker(failures=1, reset_s=60, clock=Clock())
    b.record_failure()
    b.reset()
    assert b.state == "closed" and b.allow()


def test_rejects_nonsense_threshold() -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(failures=0)
