"""Response bodies of the read routes the web console is built on (``api/routes/explore.py``).

Public, documented routes like every other: the console calls nothing else, so any client can do what it does.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class UserSummary(BaseModel):
    user_id: str
    n_items: int = Field(description="Items in the user's history in the data set the server was seeded from.")


class UsersResponse(BaseModel):
    users: list[UserSummary]
    total: int = Field(description="Users that match the query (all users without one).")


class HistoryItem(BaseModel):
    item_id: str
    position: int = Field(description="0 for the oldest item of the history shown.")
    title: str | None
    categories: list[str] | None
    known: bool = Field(description="Some loaded model's catalogue holds the item.")


class RoutingDecision(BaseModel):
    engine: str = Field(description="The engine the router would ask first for this user now.")
    reason: str = Field(
        description="explicit | experiment:<name> | rule:no_history | rule:short_history | rule:long_history"
    )
    chain: list[str] = Field(description="The engines it would try, in order; the floor ends it.")
    note: str | None


class UserResponse(BaseModel):
    user_id: str
    known: bool = Field(description="The user has a history (from the data set or from events).")
    n_items: int = Field(description="Items in the stored history (the service keeps at most history_max_len).")
    history: list[HistoryItem] = Field(description="The newest ``limit`` items, oldest first.")
    routing: RoutingDecision


class TrainingSummary(BaseModel):
    best_epoch: int | None
    epochs_run: int | None
    valid_ndcg_at_10: float | None = Field(alias="valid_ndcg@10")
    seconds_per_epoch: float | None
    train_seconds: float | None


class EpochFigures(BaseModel):
    epoch: int = Field(description="1-based.")
    metrics: dict[str, float] = Field(description="valid/hr@10, valid/ndcg@10, … after that epoch.")


class EngineMetricsResponse(BaseModel):
    name: str
    model_version: str
    created: str | None = Field(description="When the artifact was written (UTC, ISO 8601).")
    dataset_hash: str | None
    n_items: int
    training: TrainingSummary
    test: dict[str, float] = Field(description="The test split's figures from the artifact's metrics.json.")
    valid_history: list[EpochFigures]


class RequestStats(BaseModel):
    total: int = Field(description="Requests to the recommendation and similar-items routes.")
    errors: int = Field(description="Of them, answered with a 5xx.")
    per_s: float = Field(description="Over the last minute (since the start on the first call).")
    fallbacks: int = Field(description="Requests answered by a fallback engine.")


class CacheStats(BaseModel):
    hits: int
    misses: int
    hit_ratio: float | None = Field(description="hits / (hits + misses); null before the first lookup.")


class LatencyStats(BaseModel):
    p50: float | None
    p95: float | None
    p99: float | None


class EngineLatency(BaseModel):
    engine: str
    requests: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None


class StatsResponse(BaseModel):
    metrics: Literal["enabled", "disabled"] = Field(
        description="observability.metrics; with it disabled every figure is zero or null."
    )
    uptime_s: float
    requests: RequestStats
    cache: CacheStats
    latency_ms: LatencyStats = Field(description="Of the recommendation and similar-items routes, milliseconds.")
    engines: list[EngineLatency] = Field(description="The same, by the engine that answered.")
