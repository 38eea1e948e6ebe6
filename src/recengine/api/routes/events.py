"""``POST /api/v1/events``: one event or a list; answered only once every new event is durably stored.

Once stored, the events are attributed to the answers they respond to (``serving/attribution.py``); that step is
best effort: an impression store that is down leaves ``attributed`` null, never fails the request.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from pydantic import TypeAdapter, ValidationError
from starlette.responses import Response

from recengine.api.deps import WRITE_RESPONSES, GatewayDep, WriteDep
from recengine.api.schemas import EventIn, EventsResponse
from recengine.errors import EventLogFull
from recengine.serving.events import Event

router = APIRouter(prefix="/api/v1", tags=["events"])

_ONE: TypeAdapter[EventIn] = TypeAdapter(EventIn)
_EVENT_SCHEMA = EventIn.model_json_schema()
_BODY_SCHEMA = {"oneOf": [_EVENT_SCHEMA, {"type": "array", "items": _EVENT_SCHEMA, "minItems": 1}]}


def _parse(raw: bytes, max_batch: int) -> list[EventIn]:
    if not raw.strip():
        raise RequestValidationError([{"loc": ("body",), "msg": "a JSON event or a JSON list of events is required"}])
    try:
        data: Any = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise RequestValidationError([{"loc": ("body",), "msg": f"invalid JSON: {exc}"}]) from None
    items = data if isinstance(data, list) else [data]
    if not items:
        raise RequestValidationError([{"loc": ("body",), "msg": "the list of events is empty"}])
    if len(items) > max_batch:
        raise RequestValidationError(
            [
                {
                    "loc": ("body",),
                    "msg": f"{len(items)} events; at most {max_batch} per request (serving.max_batch_events)",
                }
            ]
        )
    events, errors = [], []
    for i, item in enumerate(items):
        prefix: tuple[Any, ...] = ("body", i) if isinstance(data, list) else ("body",)
        try:
            events.append(_ONE.validate_python(item))
        except ValidationError as exc:
            errors += [{"loc": prefix + tuple(e["loc"]), "msg": e["msg"]} for e in exc.errors()]
    if errors:
        raise RequestValidationError(errors)
    return events


def _n_rejected(errors: Sequence[Any]) -> int:
    """Events with at least one invalid field: one per list position named, else the one event (or body)."""
    positions = {e["loc"][1] if len(e["loc"]) > 1 and isinstance(e["loc"][1], int) else None for e in errors}
    return max(1, len(positions))


@router.post(
    "/events",
    response_model=EventsResponse,
    summary="Record one event or a batch (durable, idempotent by event_id)",
    dependencies=[WriteDep],
    responses={
        **WRITE_RESPONSES,
        503: {
            "description": "Nothing stored; retry after the Retry-After header: the event log is unavailable, or "
            "full of events not yet merged into a data set (type …/event-log-full)"
        },
    },
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": _BODY_SCHEMA}}}},
)
async def post_events(request: Request, gateway: GatewayDep) -> Response:
    metrics_on = gateway.settings.observability.metrics
    try:
        parsed = _parse(await request.body(), gateway.settings.serving.max_batch_events)
    except RequestValidationError as exc:
        if metrics_on:
            from recengine.observability import metrics

            metrics.record_events(rejected=_n_rejected(exc.errors()))
        raise
    now = time.time()
    events = [
        Event(
            event_id=e.event_id or uuid.uuid4().hex,
            user_id=e.user_id,
            item_id=e.item_id,
            type=e.type,
            timestamp=e.timestamp.timestamp() if e.timestamp is not None else now,
        )
        for e in parsed
    ]
    try:
        result = await gateway.ingest.ingest(events)
    except EventLogFull as exc:
        if metrics_on:
            from recengine.observability import metrics

            metrics.record_events(refused=len(events))
            metrics.set_event_log_backlog(exc.unmerged, exc.limit)
        raise
    if metrics_on:
        from recengine.observability import metrics

        metrics.record_events(accepted=result.accepted)
    attributed = None
    if gateway.attribution is not None:
        attributed = await gateway.attribution.try_attribute(events, [e.recommendation_id for e in parsed])
    body = {
        "accepted": result.accepted,
        "duplicates": result.duplicates,
        "event_ids": result.event_ids,
        "attributed": attributed,
    }
    return Response(orjson.dumps(body), media_type="application/json")
