"""Liveness, readiness and the Prometheus scrape."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from recengine.api.deps import GatewayDep
from recengine.api.problems import problem
from recengine.api.schemas import HealthResponse, ReadyResponse

router = APIRouter(tags=["health"])


@router.get("/health", response_model=HealthResponse, summary="Liveness: the process answers")
async def health() -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


@router.get(
    "/ready",
    response_model=ReadyResponse,
    summary="Readiness: models loaded; Redis reachable, or running degraded from memory",
    responses={503: {"description": "No model is loaded: nothing could be served."}},
)
async def ready(request: Request, gateway: GatewayDep) -> Response:
    await gateway.stores.probe()
    models = {name: m.version for name, m in gateway.registry.models.items()}
    if not models:
        return problem(
            503,
            f"no model loaded from {gateway.settings.serving.artifacts_dir}; train one with "
            "`recengine train --engine popularity`",
            request.state.request_id,
        )
    stores = gateway.stores
    body = {
        "status": "degraded" if stores.degraded else "ready",
        "models": models,
        "cache": "redis" if stores.redis is not None and not stores.degraded else "memory",
        "redis": stores.redis_status,
    }
    return Response(orjson.dumps(body), media_type="application/json")


@router.get("/metrics", include_in_schema=False)
async def metrics(gateway: GatewayDep) -> Response:
    if not gateway.settings.observability.metrics:
        return Response(b"metrics disabled (observability.metrics = false)\n", status_code=404)
    from recengine.observability.metrics import metrics_response

    body, content_type = metrics_response()
    return Response(body, media_type=content_type)
