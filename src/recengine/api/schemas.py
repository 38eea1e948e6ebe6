"""Request and response bodies.

The response models document the contract in OpenAPI; the routes write the same shape directly with orjson
(validating our own output on every request would halve the throughput).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    ValidatorFunctionWrapHandler,
    WithJsonSchema,
    field_validator,
)

from recengine.engines import ENGINE_NAMES

#: Some character that is not white space — spelled out, because ``\S`` differs between the server's regex engine
#: (Unicode: U+0085 is a space) and JSON Schema's ECMAScript one (it is not), and the schema must say what is accepted.
NOT_BLANK = r"[^\t\n\v\f\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]"
#: External ids: any non-blank string up to 256 characters (ids are opaque to the service).
ExternalId = Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=NOT_BLANK)]
Category = Annotated[str, StringConstraints(min_length=1, max_length=128)]
if TYPE_CHECKING:
    EngineName = str
else:
    # The engine table's names, in its order: the OpenAPI enum lists exactly the engines there are.
    EngineName = Literal[ENGINE_NAMES]

MAX_LIST = 500


def _json_integer(value: Any) -> Any:
    # JSON bodies are typed: "5" or true is not the integer the schema promises (5.0 is, as in JSON Schema).
    if isinstance(value, str | bool):
        raise ValueError("must be a JSON integer")
    return value


#: ``k`` in a JSON body: an integer, no strings or booleans coerced into it (bounds before the validator, so that
#: the JSON schema states them as minimum / maximum).
BodyK = Annotated[int, Field(ge=1, le=10_000), BeforeValidator(_json_integer)]


class _Body(BaseModel):
    # An unknown field is a typo in the client: say so instead of ignoring it.
    model_config = ConfigDict(extra="forbid")


class RecommendBody(_Body):
    user_id: ExternalId | None = Field(default=None, description="Omit for anonymous (session) recommendations.")
    k: BodyK | None = Field(
        default=None, description="How many items; default serving.default_k, at most serving.max_k."
    )
    engine: EngineName | None = Field(default=None, description="Ask for one engine (used when enabled).")
    exclude_seen: StrictBool = Field(default=True, description="Leave out items already in the history.")
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
    engine: str | None = Field(
        default=None, description="Interleaved answers only: the engine this item is credited to."
    )


#: A recommendation id as the service writes it (32 hex digits): what ``POST /events`` accepts.
RecommendationId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]


class ExperimentRef(BaseModel):
    name: str
    arm: str = Field(description="The arm (an engine), or 'interleave' for an interleaved answer.")


class RecommendationResponse(BaseModel):
    request_id: str
    recommendation_id: str = Field(description="Quote it in POST /api/v1/events to attribute an event to this answer.")
    user_id: str | None
    experiment: ExperimentRef | None = Field(description="The experiment and arm that chose the engine, if one did.")
    engine: str
    model_version: str
    fallback: str | None = Field(description="null when the first-choice engine answered, else why it did not.")
    cached: bool
    items: list[RecommendedItem]
    took_ms: float


class SimilarItemsResponse(BaseModel):
    request_id: str
    recommendation_id: str
    item_id: str
    engine: str
    model_version: str
    fallback: str | None
    cached: bool
    items: list[RecommendedItem]
    took_ms: float


# Years 2000 .. 2099 as written: a timestamp outside is a unit mistake (ms for s) far more often than a real event.
_MIN_TS = datetime(2000, 1, 1, tzinfo=UTC)
_MAX_TS = datetime(2100, 1, 1, tzinfo=UTC)
_YEAR_20XX = re.compile(r"^20[0-9]{2}-")
# The published schema states the same bound, so a generated client or a fuzzer knows exactly what is accepted.
Timestamp = Annotated[
    datetime,
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "format": "date-time", "pattern": _YEAR_20XX.pattern},
                {
                    "type": "number",
                    "minimum": _MIN_TS.timestamp(),
                    "exclusiveMaximum": _MAX_TS.timestamp(),
                },
            ]
        }
    ),
]


class EventIn(_Body):
    user_id: ExternalId
    item_id: ExternalId
    type: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,31}$")] = Field(
        default="view", description="view, click, cart, purchase, … (lower-case word)."
    )
    timestamp: Timestamp | None = Field(
        default=None,
        description="ISO 8601 (year 2000–2099 as written) or Unix seconds; naive times are UTC; default: now.",
    )
    event_id: Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$")] | None = Field(
        default=None, description="Makes retries idempotent; generated when absent."
    )
    recommendation_id: RecommendationId | None = Field(
        default=None, description="The answer this event responds to (its recommendation_id), for attribution."
    )

    @field_validator("timestamp", mode="wrap")
    @classmethod
    def _sane_time(cls, v: Any, handler: ValidatorFunctionWrapHandler) -> datetime | None:
        # Exactly what the schema states: Unix seconds in [2000, 2100) checked on the number itself (converting
        # first could round 4102444799.9999995 up to the year 2100), or an ISO string written with a 20xx year.
        if isinstance(v, int | float) and not isinstance(v, bool):
            if not _MIN_TS.timestamp() <= v < _MAX_TS.timestamp():
                raise ValueError("Unix seconds must fall in the years 2000 to 2099")
            return datetime.fromtimestamp(v, UTC)
        if isinstance(v, str) and not _YEAR_20XX.match(v):
            raise ValueError("must be an ISO 8601 time in the years 2000 to 2099, or Unix seconds")
        out: datetime | None = handler(v)
        if out is not None and out.tzinfo is None:
            out = out.replace(tzinfo=UTC)
        return out


class EventsResponse(BaseModel):
    accepted: int = Field(description="New events, durably stored.")
    duplicates: int = Field(description="Events whose event_id was already stored (retries).")
    event_ids: list[str]
    attributed: int | None = Field(
        default=None,
        description="Events of this request credited to an answer shown to the user (by recommendation_id or by "
        "the attribution window); null when the impression store could not be asked (the events are stored).",
    )


class EngineStatus(BaseModel):
    name: str
    enabled: bool
    loaded: bool
    model_version: str | None
    n_items: int | None
    health: str
    circuit: Literal["closed", "open", "half_open"]
    error: str | None
    scores_new_items: bool = Field(
        description="true: places catalogue items it was not trained on from their metadata at once (neural); "
        "false: scores them only once retrained."
    )
    unscored_items: int | None = Field(
        description="Available catalogue items this model cannot recommend until it is retrained (null: not loaded)."
    )
    numeric_features: list[str] = Field(description="Item attributes the model reads as numeric features.")


class EnginesResponse(BaseModel):
    engines: list[EngineStatus]


class HealthResponse(BaseModel):
    status: Literal["ok"]


class IndexResponse(BaseModel):
    service: Literal["recengine"]
    version: str
    links: dict[str, str] = Field(
        description="Name → path: console, docs, openapi, recommendations, engines, health, ready, metrics."
    )


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


# ---- the catalogue ---------------------------------------------------------------------------------------------
_MAX_FLOAT = 1.7976931348623157e308
_ATTRIBUTE_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "maxLength": 1024},
        {"type": "number", "minimum": -_MAX_FLOAT, "maximum": _MAX_FLOAT},
        {"type": "boolean"},
        {"type": "null"},
    ]
}


def _attribute(value: Any) -> Any:
    # A JSON scalar, kept as typed (no "5" → 5): numbers are what the neural engine can read as features.
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        if len(value) > 1024:
            raise ValueError("a string attribute has at most 1024 characters")
        return value
    if isinstance(value, int):
        if abs(value) <= 2**53:
            return value
        if abs(value) > _MAX_FLOAT:
            raise ValueError("number out of range")
        return float(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError("must be a finite number")
        return value
    raise ValueError("must be a string, a number, a boolean or null")


AttributeName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_.:-]{0,63}$")]
AttributeValue = Annotated[Any, BeforeValidator(_attribute), WithJsonSchema(_ATTRIBUTE_SCHEMA)]
Title = Annotated[str, StringConstraints(max_length=1024)]


def _no_other_attributes(schema: dict[str, Any]) -> None:
    # pydantic writes the name rule as patternProperties, which alone lets any other name through.
    schema["properties"]["attributes"]["additionalProperties"] = False


class ItemIn(_Body):
    """A whole item: PUT replaces the record (fields left out take their defaults, nothing is merged)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_no_other_attributes)
    title: Title | None = Field(default=None, description="Shown in answers; its words are a neural feature.")
    categories: list[Category] = Field(
        default_factory=list, max_length=64, description="Category filters and the neural engine read them."
    )
    attributes: dict[AttributeName, AttributeValue] = Field(
        default_factory=dict,
        max_length=64,
        description="Free-form JSON scalars. An attribute named like a numeric feature of the served neural model "
        "(e.g. price; GET /api/v1/engines lists them) must be a number or null: the item tower reads it.",
    )
    available: StrictBool = Field(default=True, description="false: never recommended (as DELETE).")


class ItemBatchEntry(ItemIn):
    item_id: ExternalId


class ItemsBatchIn(_Body):
    items: list[ItemBatchEntry] = Field(
        min_length=1,
        max_length=100_000,
        description="At most catalogue.max_batch_items; a later entry for an id replaces an earlier one.",
    )


class CatalogueItemOut(BaseModel):
    item_id: str
    title: str | None
    categories: list[str]
    attributes: dict[str, str | float | bool | None]
    available: bool
    updated_at: float = Field(description="Unix seconds of the last write; 0 for an item never written.")
    version: int = Field(description="Catalogue version of the last write; 0 for an item never written.")
    source: Literal["catalogue", "model"] = Field(
        description="catalogue: written through this API; model: known only from a served model's training data."
    )


class ItemsWrittenResponse(BaseModel):
    version: int = Field(description="The catalogue version after the write.")
    created: int
    updated: int
    item_ids: list[str]


class ItemSearchResponse(BaseModel):
    catalogue_version: int
    items: list[CatalogueItemOut]
