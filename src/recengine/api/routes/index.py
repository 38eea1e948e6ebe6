"""``GET /``: where to go from here — the API's documentation, health, metrics and the main routes."""

from __future__ import annotations

from html import escape

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from recengine import __version__
from recengine.api.schemas import IndexResponse

router = APIRouter(tags=["health"])

#: name → (path, what a person finds there)
LINKS: dict[str, tuple[str, str]] = {
    "console": ("/ui", "the web console: users, engines, catalogue, experiments"),
    "docs": ("/docs", "interactive API documentation"),
    "openapi": ("/openapi.json", "the OpenAPI document"),
    "recommendations": ("/api/v1/recommendations", "top-K for a user (?user_id=…&k=…)"),
    "engines": ("/api/v1/engines", "each engine's model version, health and circuit"),
    "health": ("/health", "liveness"),
    "ready": ("/ready", "readiness: models loaded, Redis reachable"),
    "metrics": ("/metrics", "Prometheus metrics"),
}


def _wants_html(request: Request) -> bool:
    # Browsers list text/html first; API clients (curl, httpx) send */* or application/json.
    return "text/html" in request.headers.get("accept", "")


@router.get(
    "/",
    response_model=IndexResponse,
    summary="Links to the documentation, health, metrics and main routes",
    responses={200: {"content": {"text/html": {"schema": {"type": "string"}}}}},
)
async def index(request: Request) -> Response:
    if _wants_html(request):
        rows = "".join(
            f'<li><a href="{escape(path)}">{escape(path)}</a> — {escape(what)}</li>' for path, what in LINKS.values()
        )
        page = (
            '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>recengine</title>'
            '<meta name="viewport" content="width=device-width, initial-scale=1"></head>'
            f"<body><h1>recengine {escape(__version__)}</h1><ul>{rows}</ul></body></html>"
        )
        return Response(page, media_type="text/html")
    body = {"service": "recengine", "version": __version__, "links": {k: p for k, (p, _) in LINKS.items()}}
    return Response(orjson.dumps(body), media_type="application/json")
