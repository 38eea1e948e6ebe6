"""The one place where errors become HTTP: ``application/problem+json`` (RFC 9457) for every failure.

RequestValidationError      → 422, naming each field (``query.k``, ``body[3].user_id``)
HTTPException (routing)     → its status (404 unknown path, 405 wrong method, 401/403/404 admin, 413 body)
NotFound                    → 404
EventRejected, ConfigError  → 422
EngineUnavailable           → 503 (no engine at all could answer — popularity missing)
StorageUnavailable          → 503 (the event log cannot take the write; nothing stored, retry)
EventLogFull                → 503 (too many unmerged events: backpressure, Retry-After 30 s)
anything else               → 500 with a generic detail; the traceback goes to the log, never to the client
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from recengine.errors import (
    ConfigError,
    EngineUnavailable,
    EventLogFull,
    EventRejected,
    NotFound,
    RecengineError,
    StorageUnavailable,
)

PROBLEM_TYPE = "application/problem+json"
_TYPE_BASE = "https://recengine.dev/problems/"
log = logging.getLogger("recengine.api")

_TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Payload too large",
    415: "Unsupported media type",
    422: "Unprocessable content",
    500: "Internal server error",
    503: "Service unavailable",
}


def request_id_of(request: Request) -> str:
    return str(getattr(request.state, "request_id", "") or "")


def problem(
    status: int,
    detail: str,
    request_id: str,
    *,
    title: str | None = None,
    kind: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response:
    body: dict[str, Any] = {
        "type": _TYPE_BASE + (kind or str(status)),
        "title": title or _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
        "request_id": request_id,
    }
    body.update({k: v for k, v in extra.items() if v is not None})
    return Response(orjson.dumps(body), status_code=status, media_type=PROBLEM_TYPE, headers=headers)


def field_name(loc: tuple[Any, ...] | list[Any]) -> str:
    """``("body", "events", 3, "user_id")`` → ``body.events[3].user_id``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "body"


def validation_problem(errors: list[dict[str, Any]], request_id: str) -> Response:
    items = [{"field": field_name(e.get("loc", ())), "message": str(e.get("msg", "invalid"))} for e in errors]
    detail = "; ".join(f"{i['field']}: {i['message']}" for i in items[:10]) or "invalid request"
    return problem(422, detail, request_id, kind="validation", errors=items)


def install(app: FastAPI) -> None:
    """Register the handlers that turn every exception into a problem document."""

    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return validation_problem(list(exc.errors()), request_id_of(request))

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        detail = exc.detail if isinstance(exc.detail, str) else _TITLES.get(exc.status_code, "error")
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no route for {request.url.path}"
        headers = dict(exc.headers) if exc.headers else None
        if exc.status_code == 405:
            # Starlette names the methods of the first route that matched the path; several routes can share it.
            headers = {**(headers or {}), "Allow": ", ".join(allowed_methods(request))}
        return problem(exc.status_code, detail, request_id_of(request), headers=headers)

    async def on_domain(request: Request, exc: Exception) -> Response:
        rid = request_id_of(request)
        if isinstance(exc, NotFound):
            return problem(404, str(exc), rid, kind="not-found")
        if isinstance(exc, EventRejected | ConfigError):
            return problem(422, str(exc), rid, kind="rejected")
        if isinstance(exc, StorageUnavailable):
            kind = "event-log-full" if isinstance(exc, EventLogFull) else "storage-unavailable"
            return problem(503, str(exc), rid, kind=kind, headers={"Retry-After": str(exc.retry_after_s)})
        if isinstance(exc, EngineUnavailable):
            return problem(503, str(exc), rid, kind="engine-unavailable", headers={"Retry-After": "1"})
        return await on_unexpected(request, exc)

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        rid = request_id_of(request)
        log.error("unhandled error on %s %s (request %s)", request.method, request.url.path, rid, exc_info=exc)
        # Sent by Starlette's outermost error middleware, past ours: the request id header is set here.
        return problem(
            500, f"internal error; quote request id {rid} when reporting it", rid, headers={"x-request-id": rid}
        )

    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(RecengineError, on_domain)
    app.add_exception_handler(Exception, on_unexpected)


def allowed_methods(request: Request) -> list[str]:
    """Every method some route of the app serves at the request's path (asked of the router itself, so routes
    included from sub-routers count)."""
    from starlette.routing import Match

    allowed = []
    for method in ("DELETE", "GET", "PATCH", "POST", "PUT"):
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] == Match.FULL for route in request.app.router.routes):
            allowed.append(method)
    return allowed
