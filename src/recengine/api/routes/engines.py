"""``GET /api/v1/engines``: each engine's switch, loaded version, health and circuit."""

from __future__ import annotations

import orjson
from fastapi import APIRouter
from starlette.responses import Response

from recengine.api.deps import ServiceDep
from recengine.api.schemas import EnginesResponse

router = APIRouter(prefix="/api/v1", tags=["engines"])


@router.get("/engines", response_model=EnginesResponse, summary="Engines: enabled, version, health, circuit")
async def list_engines(service: ServiceDep) -> Response:
    return Response(orjson.dumps({"engines": service.engines()}), media_type="application/json")
