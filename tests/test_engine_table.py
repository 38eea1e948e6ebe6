"""The one engine table and everything derived from it."""

from __future__ import annotations

import typing

import pytest

from recengine.api.schemas import RecommendBody
from recengine.engines import (
    ENGINE_CLASSES,
    ENGINE_NAMES,
    ENGINES,
    FALLBACK_ORDER,
    FLOOR,
    RULE_ENGINES,
    SIMILAR_ORDER,
    engine_class,
)
from recengine.serving.registry import ModelRegistry
from recengine.serving.routing import RuntimeConfig, decide
from recengine.settings import RUNTIME_KEYS, EnginesSettings, Settings


def test_the_derived_orders_are_the_served_ones() -> None:
    assert ENGINE_NAMES == ("popularity", "ease", "transformer", "neural", "ranker")
    # The ranker composes the others: it comes after them; the floor still ends every chain (serving/routing.py).
    assert FALLBACK_ORDER == ("transformer", "neural", "ease", "popularity", "ranker")
    assert SIMILAR_ORDER == ("neural", "ease", "transformer", "popularity", "ranker")
    assert RULE_ENGINES == {"floor": "popularity", "short_history": "neural", "long_history": "transformer"}
    assert FLOOR == "popularity"
    assert list(ENGINE_CLASSES) == list(ENGINE_NAMES)


def test_every_engine_has_a_settings_section_and_a_runtime_switch() -> None:
    assert tuple(EnginesSettings.model_fields) == ENGINE_NAMES
    assert RUNTIME_KEYS[: len(ENGINE_NAMES)] == tuple(f"engines.{n}.enabled" for n in ENGINE_NAMES)
    assert Settings().routing.fallback == list(FALLBACK_ORDER)


def test_the_api_enum_lists_the_table() -> None:
    engine = RecommendBody.model_json_schema()["properties"]["engine"]["anyOf"][0]
    assert engine == {"enum": list(ENGINE_NAMES), "type": "string"}


@pytest.mark.parametrize("entry", ENGINES, ids=lambda e: e.name)
def test_the_table_agrees_with_each_engine_class(entry: typing.Any) -> None:
    cls = engine_class(entry.name)
    assert cls.__name__ == entry.target.split(":")[1]
    assert cls.needs_history is entry.needs_history
    if entry.role == "floor":
        assert not entry.needs_history  # the floor answers an empty history


def test_routing_rules_and_registry_default_to_the_table(tmp_path: typing.Any) -> None:
    cfg = RuntimeConfig(enabled=dict.fromkeys(ENGINE_NAMES, True))
    assert decide(cfg, "u", 0).primary == RULE_ENGINES["floor"]
    assert decide(cfg, "u", 1).primary == RULE_ENGINES["short_history"]
    assert decide(cfg, "u", 100).primary == RULE_ENGINES["long_history"]
    assert cfg.fallback == FALLBACK_ORDER
    assert ModelRegistry(tmp_path).names == list(ENGINE_NAMES)


def test_runtime_config_defaults_are_the_settings_defaults() -> None:
    s, cfg = Settings(), RuntimeConfig()
    assert cfg.short_history == s.routing.short_history
    assert cfg.fallback == tuple(s.routing.fallback)
    assert cfg.experiment_name == s.routing.experiment.name
    assert cfg.cache_ttl_s == s.cache.ttl_s
    assert cfg.engine_timeout_ms == s.serving.engine_timeout_ms
