"""Request and response bodies.

The response models document the contract in OpenAPI; the routes write the same shape directly with orjson
(validating our own output on every request would halve the throughput).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from recengine.engines import ENGINE_NAMES

#: External ids: any non-blank string up to 256 characters (ids are opaque to the service).
ExternalId = Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=r"\S")]
Category = Annotated[str, StringConstraints(min_length=1, max_length=128)]
if TYPE_CHECKING:
    EngineName = str
else:
    # The engine table's names, in its order: the OpenAPI enum lists exactly the engines there are.
    EngineName = Literal[ENGINE_NAMES]

MAX_LIST = 500


class _Body(BaseModel):
    # An unknown field is a typo in the client: say so instead of ignoring it.
    model_config = ConfigDict(extra="forbid")


class RecommendBody(_Body):
    user_id: ExternalId | None = Field(default=None, description="Omit for anonymous (session) recommendations.")
    k: int | None = Field(
        default=None, ge=1, le=10_000, description="How many items; default serving.default_k, at most serving.max_k."
    )
    engine: EngineName | None = Field(default=None, description="Ask for one engine (used when enabled).")
    exclude_seen: bool = Field(default=True, description="Leave out items already in the history.")
    recent_items: list[ExternalId] = Field(
        default_factory=list, max_length=MAX_LIST, description="Session items, oldest first."
    )
    exclude_items: list[ExternalId] = Field(default_factory=list, max_length=MAX_LIST)
    include_categories: list[Category] = Field(
        default_factory=list, max_length=100, description="Only items in any of these categories."
    )
    exclude_categories: list[Category] = Field(default_factory=list, max_length=100)


class RecommendQuery(_Body):
    """The query of ``GET /api/v1/recommendations`` (validated as one model: see routes/recommendations.py)."""

    model_config = ConfigDict(extra="ignore")
    user_id: ExternalId = Field(description="Unknown users get the cold-start answer.")
    k: int | None = Field(
        default=None, ge=1, le=10_000, description="How many items; default serving.default_k, at most serving.max_k."
    )
    engine: EngineName | None = Field(default=None, description="Ask for one engine (used when enabled).")
    exclude_seen: bool = Field(default=True, description="Leave out items already in the history.")


def query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    """OpenAPI ``parameters`` for a query model, as FastAPI would have written them."""
    schema = model.model_json_schema()
    required = set(schema.get("required", ()))
    return [
        {
            "name": name,
            "in": "query",
            "required": name in required,
            "description": prop.get("description", ""),
            "schema": {k: v for k, v in prop.items() if k != "description"},
        }
        for name, prop in schema["properties"].items()
    ]


class RecommendedItem(BaseModel):
    item_id: str
    score: float
    rank: int
    title: str | None = None
    categories: list[str] | None = None


class RecommendationResponse(BaseModel):
    request_id: str
    user_id: str | None
    engine: str
    model_version: str
    fallback: str | None = Field(description="null when the first-choice engine answered, else why it did not.")
    cached: bool
    items: list[RecommendedItem]
    took_ms: float


class SimilarItemsResponse(BaseModel):
    request_id: str
    item_id: str
    engine: str
    model_version: str
    fallback: str | None
    cached: bool
    items: list[RecommendedItem]
    took_ms: float


# Year 2000 .. 2100: a timestamp outside is a unit mistake (ms for s) far more often than a real event.
_MIN_TS = datetime(2000, 1, 1, tzinfo=UTC)
_MAX_TS = datetime(2100, 1, 1, tzinfo=UTC)


class EventIn(_Body):
    user_id: ExternalId
    item_id: ExternalId
    type: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,31}$")] = Field(
        default="view", description="view, click, cart, purchase, … (lower-case word)."
    )
    timestamp: datetime | None = Field(
        default=None, description="ISO 8601 or Unix seconds; naive times are UTC; default: now."
    )
    event_id: Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$")] | None = Field(
        default=None, description="Makes retries idempotent; generated when absent."
    )

    @field_validator("timestamp")
    @classmethod
    def _sane_time(cls, v: datetime | None) -> datetime | None:
        if v is None:
            return v
        if v.tzinfo is None:
            v = v.replace(tzinfo=UTC)
        if not _MIN_TS <= v < _MAX_TS:
            raise ValueError("must be between 2000-01-01 and 2100-01-01")
        return v


class EventsResponse(BaseModel):
    accepted: int = Field(description="New events, durably stored.")
    duplicates: int = Field(description="Events whose event_id was already stored (retries).")
    event_ids: list[str]


class EngineStatus(BaseModel):
    name: str
    enabled: bool
    loaded: bool
    model_version: str | None
    n_items: int | None
    health: str
    circuit: Literal["closed", "open", "half_open"]
    error: str | None


class EnginesResponse(BaseModel):
    engines: list[EngineStatus]


class HealthResponse(BaseModel):
    status: Literal["ok"]


class ReadyResponse(BaseModel):
    status: Literal["ready", "degraded"]
    models: dict[str, str]
    cache: Literal["memory", "redis"]
    redis: str = Field(description="'ok', 'not configured', or 'unreachable: …' while degraded.")


class ReloadBody(_Body):
    engines: list[EngineName] | None = Field(default=None, description="Engines to reload; default all.")


class ReloadResult(BaseModel):
    engine: str
    status: Literal["loaded", "unchanged", "refused", "absent"]
    version: str | None
    previous: str | None
    error: str | None


class ReloadResponse(BaseModel):
    results: list[ReloadResult]


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str
    request_id: str
    errors: list[dict[str, Any]] | None = None
