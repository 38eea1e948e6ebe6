"""The ranking stage (engines/ranker.py): the Engine contract, its features, its training protocol and artifact."""

from __future__ import annotations

from collections.abc import Callable

from recengine.engines.base import Engine
from tests.engines.contract import EngineContract


class TestRankerContract(EngineContract):
    engine_name = "ranker"
    needs_history = True


def test_smoke(fitted: Callable[[str], Engine]) -> None:
    r = fitted("ranker")
    print(r.metrics)
