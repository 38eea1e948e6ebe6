"""``GET /api/v1/engines``: each engine's switch, loaded version, health, circuit — and what it makes of the
catalogue: whether it places new items from their metadata at once, and how many it cannot score until retrained."""

from __future__ import annotations

import orjson
from fastapi import APIRouter
from starlette.responses import Response

from recengine.api.deps import GatewayDep
from recengine.api.schemas import EnginesResponse
from recengine.catalogue.view import numeric_features, places_new_items

router = APIRouter(prefix="/api/v1", tags=["engines"])


@router.get("/engines", response_model=EnginesResponse, summary="Engines: enabled, version, health, circuit")
async def list_engines(gateway: GatewayDep) -> Response:
    service = gateway.service
    if gateway.catalogue is not None:
        await gateway.catalogue.sync()
    rows = service.engines()
    for row in rows:
        model = service.registry.get(row["name"])
        if model is None:
            row.update(scores_new_items=False, unscored_items=None, numeric_features=[])
            continue
        overlay = model.catalogue
        row.update(
            scores_new_items=places_new_items(model.engine),
            unscored_items=overlay.unscored if overlay is not None else 0,
            numeric_features=numeric_features(model.engine),
        )
    return Response(orjson.dumps({"engines": rows}), media_type="application/json")
