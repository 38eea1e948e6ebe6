"""Dependencies for the routes: the gateway, its service, the admin key check."""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import Depends, Header, HTTPException, Request

from recengine.api.gateway import Gateway
from recengine.serving.service import RecommendationService


# async: FastAPI would run a plain-def dependency in a worker thread, a hop per request for nothing.
async def get_gateway(request: Request) -> Gateway:
    gw: Gateway | None = getattr(request.app.state, "gateway", None)
    if gw is None:  # only possible when the app is used without running its lifespan
        raise HTTPException(503, "the service is starting")
    return gw


async def get_service(request: Request) -> RecommendationService:
    return (await get_gateway(request)).service


GatewayDep = Annotated[Gateway, Depends(get_gateway)]
ServiceDep = Annotated[RecommendationService, Depends(get_service)]


async def require_admin(
    gateway: GatewayDep,
    x_api_key: Annotated[str | None, Header(alias="X-API-Key", description="serving.admin_api_key")] = None,
) -> None:
    """401 without a key, 403 with a wrong one; with no key configured the admin API does not exist (404)."""
    secret = gateway.settings.serving.admin_api_key
    expected = secret.get_secret_value() if secret is not None else ""
    if not expected:
        raise HTTPException(
            404, "the admin API is disabled: set serving.admin_api_key (RECENGINE_SERVING__ADMIN_API_KEY)"
        )
    if x_api_key is None:
        raise HTTPException(401, "missing X-API-Key header", headers={"WWW-Authenticate": "X-API-Key"})
    # Constant time: the comparison must not reveal how much of a guessed key was right.
    if not hmac.compare_digest(x_api_key.encode("utf-8", "surrogateescape"), expected.encode()):
        raise HTTPException(403, "wrong API key")


AdminDep = Depends(require_admin)


async def require_write(
    gateway: GatewayDep,
    x_api_key: Annotated[
        str | None, Header(alias="X-API-Key", description="serving.write_api_key, when one is set")
    ] = None,
) -> None:
    """Writes (catalogue items, events) need ``serving.write_api_key`` when one is set: 401 without a key, 403
    with a wrong one. With none set, writes are open, like reads always are."""
    secret = gateway.settings.serving.write_api_key
    expected = secret.get_secret_value() if secret is not None else ""
    if not expected:
        return
    if x_api_key is None:
        raise HTTPException(
            401,
            "missing X-API-Key header (writes need serving.write_api_key)",
            headers={"WWW-Authenticate": "X-API-Key"},
        )
    # Constant time, as for the admin key.
    if not hmac.compare_digest(x_api_key.encode("utf-8", "surrogateescape"), expected.encode()):
        raise HTTPException(403, "wrong API key for writes")


WriteDep = Depends(require_write)
#: The responses every write route documents.
WRITE_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "serving.write_api_key is set and the request has no X-API-Key header."},
    403: {"description": "serving.write_api_key is set and X-API-Key is not it."},
}
