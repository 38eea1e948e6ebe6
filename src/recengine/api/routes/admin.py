"""Admin routes behind ``X-API-Key``: hot reload and the runtime-changeable configuration."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Body, Request
from fastapi.exceptions import RequestValidationError
from starlette.responses import Response

from recengine.api.deps import AdminDep, GatewayDep
from recengine.api.problems import problem
from recengine.api.runtime import PatchError, current_values, flatten_patch, patch_schema
from recengine.api.schemas import ReloadBody, ReloadResponse
from recengine.settings import RUNTIME_KEYS

router = APIRouter(
    prefix="/api/v1/admin",
    tags=["admin"],
    dependencies=[AdminDep],
    responses={
        401: {"description": "No X-API-Key header."},
        403: {"description": "Wrong API key."},
        404: {"description": "Admin API disabled (no serving.admin_api_key configured)."},
    },
)


@router.post(
    "/reload",
    response_model=ReloadResponse,
    summary="Load the versions the CURRENT pointers name; refuse broken ones and keep serving the old",
    responses={409: {"description": "An artifact was refused; the previous version keeps serving."}},
)
async def reload(request: Request, gateway: GatewayDep, body: ReloadBody | None = None) -> Response:
    names = body.engines if body is not None and body.engines else None
    results = await asyncio.to_thread(gateway.registry.reload, names)
    payload = [
        {
            "engine": r.engine,
            "status": r.status,
            "version": r.version,
            "previous": r.previous,
            "error": r.error,
        }
        for r in results
    ]
    refused = [r for r in results if r.status == "refused"]
    if refused:
        detail = "; ".join(r.error or r.engine for r in refused) + " (the previous version keeps serving)"
        return problem(409, detail, request.state.request_id, kind="artifact-refused", results=payload)
    return Response(orjson.dumps({"results": payload}), media_type="application/json")


@router.get("/config", summary="The runtime-changeable settings and their current values")
async def get_config(gateway: GatewayDep) -> Response:
    body = {"values": current_values(gateway.settings), "changeable": list(RUNTIME_KEYS)}
    return Response(orjson.dumps(body), media_type="application/json")


@router.patch(
    "/config",
    summary="Change runtime settings (nested or dotted keys), validated like the config file",
    # The body's exact shape (the runtime keys, typed and bounded), where FastAPI alone would say "any object".
    openapi_extra={"requestBody": {"content": {"application/json": {"schema": patch_schema()}}}},
)
async def patch_config(
    gateway: GatewayDep,
    patch: Annotated[
        dict[str, Any],
        Body(examples=[{"engines": {"ease": {"enabled": False}}, "routing.experiment.weights": {"ease": 1.0}}]),
    ],
) -> Response:
    try:
        dotted = flatten_patch(patch)
        overrides = {**gateway.overrides, **dotted}
        gateway.apply_overrides(overrides)
    except PatchError as exc:
        raise RequestValidationError(
            [{"loc": tuple(str(e["loc"]).split(".")), "msg": e["msg"]} for e in exc.errors]
        ) from None
    await gateway.share_overrides()
    body = {"values": current_values(gateway.settings), "changeable": list(RUNTIME_KEYS)}
    return Response(orjson.dumps(body), media_type="application/json")
