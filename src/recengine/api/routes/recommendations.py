"""``/api/v1/recommendations``: GET for a known user, POST for everything (session items, filters)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from pydantic import TypeAdapter, ValidationError
from starlette.responses import Response

from recengine.api.deps import GatewayDep, get_gateway
from recengine.api.schemas import RecommendationResponse, RecommendBody, RecommendQuery, query_parameters
from recengine.serving.types import Answer, RecommendRequest

router = APIRouter(prefix="/api/v1", tags=["recommendations"])


def _check_k(k: int, max_k: int, where: str) -> None:
    if k > max_k:
        raise RequestValidationError(
            [{"loc": (where, "k"), "msg": f"Input should be less than or equal to {max_k} (serving.max_k)"}]
        )


def _respond(request: Request, answer: Answer) -> Response:
    request.state.engine = answer.engine
    return Response(answer.to_json(), media_type="application/json")


_QUERY: TypeAdapter[RecommendQuery] = TypeAdapter(RecommendQuery)


# The hottest route validates its query as one pydantic model instead of four FastAPI parameters: FastAPI's
# per-parameter solving cost more than the rest of a cached answer. The OpenAPI description is the same.
@router.get(
    "/recommendations",
    response_model=RecommendationResponse,
    summary="Top-k items for a user",
    openapi_extra={"parameters": query_parameters(RecommendQuery)},
)
async def get_recommendations(request: Request) -> Response:
    gateway = await get_gateway(request)
    try:
        query = _QUERY.validate_python(dict(request.query_params))
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("query", *e["loc"])} for e in exc.errors()]) from None
    k = query.k or gateway.settings.serving.default_k
    _check_k(k, gateway.settings.serving.max_k, "query")
    req = RecommendRequest(user_id=query.user_id, k=k, engine=query.engine, exclude_seen=query.exclude_seen)
    return _respond(request, await gateway.service.recommend(req, request.state.request_id))


@router.post(
    "/recommendations",
    response_model=RecommendationResponse,
    summary="Top-k items for a user or an anonymous session, with filters",
)
async def post_recommendations(request: Request, gateway: GatewayDep, body: RecommendBody) -> Response:
    k = body.k or gateway.settings.serving.default_k
    _check_k(k, gateway.settings.serving.max_k, "body")
    req = RecommendRequest(
        user_id=body.user_id,
        k=k,
        engine=body.engine,
        exclude_seen=body.exclude_seen,
        recent_items=tuple(body.recent_items),
        exclude_items=tuple(body.exclude_items),
        include_categories=tuple(body.include_categories),
        exclude_categories=tuple(body.exclude_categories),
    )
    return _respond(request, await gateway.service.recommend(req, request.state.request_id))
