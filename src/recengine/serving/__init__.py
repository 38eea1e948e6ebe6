"""Serving: routing, fallback, cache, histories, the event log and the model registry — no web framework here.

types.py      what the service is asked and answers       service.py    decide → cache → engine → fall back
routing.py    which engine, and the chain behind it       guard.py      per-engine threads, deadline, breaker
inference.py  one batched engine call, formatted items    batching.py   micro-batching   · breaker.py
observer.py   what the service reports                    ingest.py     events → log → histories; replay
cache.py · history.py · events.py   the stores            redis.py      the Redis client and outage policy
stores.py     every store built from the settings         registry.py   served versions, hot reload
impressions.py  what was shown, what it earned (stores)   attribution.py  impression queue, event → answer credit
interleave.py   team-draft interleaving                   readout.py    experiment statistics (Wilson, z, sign test)
"""

from recengine.serving.breaker import CircuitBreaker
from recengine.serving.cache import Cache, FailoverCache, MemoryCache, RedisCache
from recengine.serving.events import Event, EventLog, RedisStreamEventLog, SqliteEventLog
from recengine.serving.guard import EngineGuard
from recengine.serving.history import (
    FailoverHistoryStore,
    HistoryStore,
    MemoryHistoryStore,
    RedisHistoryStore,
)
from recengine.serving.ingest import EventIngest, IngestResult
from recengine.serving.redis import RedisHealth
from recengine.serving.registry import ModelRegistry
from recengine.serving.routing import Decision, RuntimeConfig, decide
from recengine.serving.service import RecommendationService
from recengine.serving.stores import Stores, open_stores
from recengine.serving.types import Answer, RecommendRequest

__all__ = [
    "Answer",
    "Cache",
    "CircuitBreaker",
    "Decision",
    "EngineGuard",
    "Event",
    "EventIngest",
    "EventLog",
    "FailoverCache",
    "FailoverHistoryStore",
    "HistoryStore",
    "IngestResult",
    "MemoryCache",
    "MemoryHistoryStore",
    "ModelRegistry",
    "RecommendRequest",
    "RecommendationService",
    "RedisCache",
    "RedisHealth",
    "RedisHistoryStore",
    "RedisStreamEventLog",
    "RuntimeConfig",
    "SqliteEventLog",
    "Stores",
    "decide",
    "open_stores",
]
