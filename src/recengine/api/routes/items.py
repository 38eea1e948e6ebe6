"""``/api/v1/items/{item_id}/similar``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from starlette.responses import Response

from recengine.api.deps import GatewayDep
from recengine.api.schemas import EngineName, SimilarItemsResponse

router = APIRouter(prefix="/api/v1", tags=["items"])


@router.get(
    "/items/{item_id}/similar",
    response_model=SimilarItemsResponse,
    summary="Items similar to one item",
    responses={404: {"description": "No loaded model knows this item."}},
)
async def similar_items(
    request: Request,
    gateway: GatewayDep,
    item_id: Annotated[str, Path(min_length=1, max_length=256)],
    k: Annotated[
        int | None, Query(ge=1, le=10_000, description="Default serving.default_k, at most serving.max_k.")
    ] = None,
    engine: Annotated[EngineName | None, Query()] = None,
) -> Response:
    max_k = gateway.settings.serving.max_k
    k = k or gateway.settings.serving.default_k
    if k > max_k:
        raise RequestValidationError(
            [{"loc": ("query", "k"), "msg": f"Input should be less than or equal to {max_k} (serving.max_k)"}]
        )
    answer = await gateway.service.similar(item_id, k, engine, request.state.request_id)
    request.state.engine = answer.engine
    return Response(answer.to_json(), media_type="application/json")
