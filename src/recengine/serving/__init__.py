"""Serving: routing, fallback, cache, histories, the event log and the model registry — no web framework here."""

from recengine.serving.breaker import CircuitBreaker
from recengine.serving.cache import Cache, FailoverCache, MemoryCache, RedisCache
from recengine.serving.events import Event, EventLog, RedisStreamEventLog, SqliteEventLog
from recengine.serving.history import (
    FailoverHistoryStore,
    HistoryStore,
    MemoryHistoryStore,
    RedisHistoryStore,
)
from recengine.serving.registry import ModelRegistry
from recengine.serving.routing import Decision, RuntimeConfig, decide
from recengine.serving.service import Answer, RecommendationService, RecommendRequest

__all__ = [
    "Answer",
    "Cache",
    "CircuitBreaker",
    "Decision",
    "Event",
    "EventLog",
    "FailoverCache",
    "FailoverHistoryStore",
    "HistoryStore",
    "MemoryCache",
    "MemoryHistoryStore",
    "ModelRegistry",
    "RecommendRequest",
    "RecommendationService",
    "RedisCache",
    "RedisHistoryStore",
    "RedisStreamEventLog",
    "RuntimeConfig",
    "SqliteEventLog",
    "decide",
]
