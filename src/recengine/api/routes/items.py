"""``/api/v1/items``: the catalogue (put, get, retire, search) and ``/api/v1/items/{item_id}/similar``.

Writes go to the catalogue store (``catalogue/``), then this process catches up at once; every other worker and
replica does on its next request (the version check in ``CatalogueView.sync``).
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from starlette.responses import Response

from recengine.api.deps import WRITE_RESPONSES, GatewayDep, WriteDep
from recengine.api.gateway import Gateway
from recengine.api.schemas import (
    NOT_BLANK,
    CatalogueItemOut,
    Category,
    EngineName,
    ItemIn,
    ItemsBatchIn,
    ItemSearchResponse,
    ItemsWrittenResponse,
    SimilarItemsResponse,
)
from recengine.catalogue.records import CatalogueItem
from recengine.catalogue.view import CatalogueView
from recengine.errors import NotFound

router = APIRouter(prefix="/api/v1", tags=["items"])

ItemPath = Annotated[str, Path(min_length=1, max_length=256, pattern=NOT_BLANK)]
_UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"description": "The catalogue store cannot take the write now; nothing stored, retry."}
}
_NO_ROUTE: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such route (an item id with a '/' cannot be addressed)."}
}


def _catalogue(gateway: Gateway) -> CatalogueView:
    view = gateway.catalogue
    if view is None:  # only an app built without its lifespan
        raise NotFound("the catalogue is not configured")
    return view


async def _written(gateway: Gateway, view: CatalogueView) -> None:
    """After a write: this process catches up at once (the others on their next request), and the gauge moves."""
    await view.sync(force=True)
    if gateway.settings.observability.metrics:
        from recengine.observability import metrics

        metrics.set_catalogue_size(*view.sizes())


def _out(item: CatalogueItem, source: str) -> dict[str, Any]:
    return {**item.to_json(), "source": source}


def _record(item_id: str, body: ItemIn, where: tuple[Any, ...], view: CatalogueView, now: float) -> CatalogueItem:
    """The record to store; a 422 naming the field when an attribute the neural engine reads is not a number."""
    errors = []
    for name in view.numeric_features():
        value = body.attributes.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            errors.append(
                {
                    "loc": (*where, "attributes", name),
                    "msg": "must be a number or null: the served neural model reads it as a numeric feature",
                }
            )
    if errors:
        raise RequestValidationError(errors)
    return CatalogueItem(
        item_id=item_id,
        title=body.title,
        categories=tuple(dict.fromkeys(body.categories)),  # each once, in the order given
        attributes=dict(body.attributes),
        available=body.available,
        updated_at=now,
    )


@router.get(
    "/items",
    response_model=ItemSearchResponse,
    summary="Search the catalogue by id or title words and category",
)
async def search_items(
    gateway: GatewayDep,
    query: Annotated[
        str | None, Query(max_length=256, description="Case-insensitive substring of the item id or title.")
    ] = None,
    category: Annotated[Category | None, Query(description="Only items in this category.")] = None,
    available: Annotated[bool | None, Query(description="Only available (true) or unavailable (false) items.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> Response:
    view = _catalogue(gateway)
    await view.sync()
    found = view.search(query or None, category, limit, available)
    body = {"catalogue_version": view.version, "items": [_out(item, source) for item, source in found]}
    return Response(orjson.dumps(body), media_type="application/json")


@router.put(
    "/items",
    response_model=ItemsWrittenResponse,
    summary="Add or replace many items at once (all or none)",
    dependencies=[WriteDep],
    responses={**WRITE_RESPONSES, **_UNAVAILABLE},
)
async def put_items(gateway: GatewayDep, body: ItemsBatchIn) -> Response:
    view = _catalogue(gateway)
    limit = gateway.settings.catalogue.max_batch_items
    if len(body.items) > limit:
        raise RequestValidationError(
            [{"loc": ("body", "items"), "msg": f"{len(body.items)} items; at most {limit} (catalogue.max_batch_items)"}]
        )
    now = time.time()
    records = [_record(e.item_id, e, ("body", "items", i), view, now) for i, e in enumerate(body.items)]
    result = await view.store.put(records)
    await _written(gateway, view)
    created = sum(result.created)
    out = {
        "version": result.version,
        "created": created,
        "updated": len(records) - created,
        "item_ids": [r.item_id for r in records],
    }
    return Response(orjson.dumps(out), media_type="application/json")


@router.get(
    "/items/{item_id}",
    response_model=CatalogueItemOut,
    summary="One item as the catalogue has it",
    responses={404: {"description": "Neither the catalogue nor a served model knows this item, or it was retired."}},
)
async def get_item(gateway: GatewayDep, item_id: ItemPath) -> Response:
    view = _catalogue(gateway)
    await view.sync()
    found = view.lookup(item_id)
    if found is None:
        raise NotFound(f"item {item_id!r} is neither in the catalogue nor in any served model")
    _refuse_retired(found[0])
    return Response(orjson.dumps(_out(*found)), media_type="application/json")


def _refuse_retired(item: CatalogueItem) -> None:
    # DELETE is a soft delete: the record stays (search ?available=false lists it, a PUT brings it back), but the
    # item is gone from the API's point of view, as from every answer.
    if not item.available:
        raise NotFound(
            f"item {item.item_id!r} was retired (DELETE); GET /api/v1/items?available=false lists retired items and "
            "a PUT with available true brings it back"
        )


@router.put(
    "/items/{item_id}",
    response_model=CatalogueItemOut,
    summary="Add or replace one item; a new one is recommended by the neural engine at once",
    dependencies=[WriteDep],
    responses={
        201: {"description": "The item was new to the catalogue.", "model": CatalogueItemOut},
        **WRITE_RESPONSES,
        **_NO_ROUTE,
        **_UNAVAILABLE,
    },
)
async def put_item(gateway: GatewayDep, item_id: ItemPath, body: ItemIn) -> Response:
    view = _catalogue(gateway)
    record = _record(item_id, body, ("body",), view, time.time())
    result = await view.store.put([record])
    await _written(gateway, view)
    stored = record.with_version(result.version)
    status = 201 if result.created[0] else 200
    return Response(orjson.dumps(_out(stored, "catalogue")), status_code=status, media_type="application/json")


@router.delete(
    "/items/{item_id}",
    response_model=CatalogueItemOut,
    summary="Retire an item: marked unavailable, never recommended again by any engine",
    dependencies=[WriteDep],
    responses={
        404: {"description": "Neither the catalogue nor a served model knows this item."},
        **WRITE_RESPONSES,
        **_UNAVAILABLE,
    },
)
async def delete_item(gateway: GatewayDep, item_id: ItemPath) -> Response:
    view = _catalogue(gateway)
    fallback = None
    known = view.lookup(item_id)
    if known is not None and known[1] == "model":
        base = known[0]
        fallback = CatalogueItem(
            item_id=item_id,
            title=base.title,
            categories=base.categories,
            attributes=base.attributes,
            updated_at=time.time(),
        )
    record = await view.store.mark_unavailable(item_id, fallback)
    if record is None:
        raise NotFound(f"item {item_id!r} is neither in the catalogue nor in any served model")
    await _written(gateway, view)
    return Response(orjson.dumps(_out(record, "catalogue")), media_type="application/json")


@router.get(
    "/items/{item_id}/similar",
    response_model=SimilarItemsResponse,
    summary="Items similar to one item",
    responses={404: {"description": "No loaded model knows this item, or it was retired."}},
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
    view = _catalogue(gateway)
    await view.sync()
    record = view.records.get(item_id)
    if record is not None:
        _refuse_retired(record)
    max_k = gateway.settings.serving.max_k
    k = k or gateway.settings.serving.default_k
    if k > max_k:
        raise RequestValidationError(
            [{"loc": ("query", "k"), "msg": f"Input should be less than or equal to {max_k} (serving.max_k)"}]
        )
    answer = await gateway.service.similar(item_id, k, engine, request.state.request_id)
    request.state.engine = answer.engine
    return Response(answer.to_json(), media_type="application/json")
