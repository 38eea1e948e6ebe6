"""Read routes for people exploring the service (the web console is built on these and nothing else):
find users, read a user's history and routing, an engine's offline figures, the process's live figures."""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Query
from starlette.responses import Response

from recengine.api.deps import GatewayDep
from recengine.api.gateway import Gateway
from recengine.api.schemas import EngineName
from recengine.api.schemas_console import EngineMetricsResponse, StatsResponse, UserResponse, UsersResponse
from recengine.errors import NotFound
from recengine.observability.stats import Snapshot, collect, summarise
from recengine.serving.history import SeedHistories
from recengine.serving.routing import decide

router = APIRouter(prefix="/api/v1", tags=["explore"])


def _json(body: Any) -> Response:
    return Response(orjson.dumps(body), media_type="application/json")


@dataclass(frozen=True)
class _Directory:
    """The seeded users, with lower-cased ids for a case-insensitive search (built once per seed)."""

    seed: SeedHistories
    ids: list[str]
    lowered: list[str]
    lengths: list[int]


_directories: dict[int, _Directory] = {}
_directories_lock = threading.Lock()


def _directory(seed: SeedHistories) -> _Directory:
    found = _directories.get(id(seed))
    if found is not None and found.seed is seed:
        return found
    with _directories_lock:
        lengths = seed.lengths()
        built = _Directory(seed, list(lengths), [u.lower() for u in lengths], list(lengths.values()))
        _directories.clear()  # one seed per process; a stale one would only hold memory
        _directories[id(seed)] = built
        return built


@router.get("/users", response_model=UsersResponse, summary="Find users of the seed data set by id")
async def list_users(
    gateway: GatewayDep,
    query: Annotated[str | None, Query(max_length=256, description="Part of the user id (any case).")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    random_order: Annotated[
        bool, Query(alias="random", description="A random sample of the matches instead of the first ones.")
    ] = False,
) -> Response:
    directory = _directory(gateway.stores.memory_history.seed)
    needle = (query or "").strip().lower()
    matches: Sequence[int] = (
        [i for i, low in enumerate(directory.lowered) if needle in low] if needle else range(len(directory.ids))
    )
    total = len(matches)
    picked = random.sample(matches, min(limit, total)) if random_order else list(matches[:limit])
    users = [{"user_id": directory.ids[i], "n_items": directory.lengths[i]} for i in picked]
    return _json({"users": users, "total": total})


Described = tuple[str | None, list[str] | None, bool]


def _describer(gateway: Gateway) -> Callable[[str], Described]:
    """(title, categories, known) of an item: the catalogue's record (items added through the API included), else
    a served model's metadata."""
    view = gateway.catalogue
    if view is not None:

        def from_catalogue(item_id: str) -> Described:
            found = view.lookup(item_id)
            if found is None:
                return None, None, False
            item = found[0]
            return item.title or None, list(item.categories) or None, True

        return from_catalogue
    models = list(gateway.registry.models.values())

    def from_models(item_id: str) -> Described:
        for model in models:
            index = model.engine.item_ids.index(item_id)
            if index:
                catalog = model.engine.items
                title = catalog.titles[index] if catalog.titles is not None else None
                cats = catalog.categories[index] if catalog.categories is not None else None
                return title or None, list(cats) if cats else None, True
        return None, None, False

    return from_models


@router.get("/users/{user_id}", response_model=UserResponse, summary="A user's history and the engine routing picks")
async def get_user(
    gateway: GatewayDep,
    user_id: Annotated[str, Path(min_length=1, max_length=256)],
    limit: Annotated[int, Query(ge=1, le=1000, description="The newest items to list.")] = 50,
) -> Response:
    stored = await gateway.stores.history.get(user_id)
    items = stored.items
    decision = decide(gateway.service.config, user_id, len(items))
    if gateway.catalogue is not None:
        await gateway.catalogue.sync()
    describe = _describer(gateway)
    shown = items[-limit:]
    history = []
    for position, item_id in enumerate(shown):
        title, categories, known = describe(item_id)
        history.append(
            {"item_id": item_id, "position": position, "title": title, "categories": categories, "known": known}
        )
    body = {
        "user_id": user_id,
        "known": bool(items),
        "n_items": len(items),
        "history": history,
        "routing": {
            "engine": decision.primary,
            "reason": decision.reason,
            "chain": list(decision.chain),
            "note": decision.note,
        },
    }
    return _json(body)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _int(value: Any) -> int | None:
    number = _number(value)
    return int(number) if number is not None else None


@router.get(
    "/engines/{name}/metrics",
    response_model=EngineMetricsResponse,
    summary="The served model's training summary, validation history and test figures (its metrics.json)",
    responses={404: {"description": "No model of this engine is loaded."}},
)
async def engine_metrics(gateway: GatewayDep, name: Annotated[EngineName, Path()]) -> Response:
    model = gateway.registry.get(name)
    if model is None:
        raise NotFound(f"no {name} model is loaded")
    engine = model.engine
    metrics = engine.metrics if isinstance(engine.metrics, dict) else {}
    test_raw = metrics.get("test")
    if not isinstance(test_raw, dict):
        test_raw = {}
    test = {k: v for k, v in ((k, _number(v)) for k, v in test_raw.items()) if v is not None}
    history = []
    for row in metrics.get("valid_history") or []:
        epoch = _number(row.get("epoch")) if isinstance(row, dict) else None
        if epoch is None:
            continue
        figures = {k: v for k, v in ((k, _number(v)) for k, v in row.items() if k != "epoch") if v is not None}
        history.append({"epoch": int(epoch) + 1, "metrics": figures})
    created = engine.config.get("created")
    dataset_hash = engine.config.get("dataset_hash")
    body = {
        "name": name,
        "model_version": model.version,
        "created": created if isinstance(created, str) else None,
        "dataset_hash": dataset_hash if isinstance(dataset_hash, str) else None,
        "n_items": model.n_items,
        "training": {
            "best_epoch": _int(metrics.get("best_epoch")),
            "epochs_run": _int(metrics.get("epochs_run")),
            "valid_ndcg@10": _number(metrics.get("valid_ndcg@10")),
            "seconds_per_epoch": _number(metrics.get("seconds_per_epoch")),
            "train_seconds": _number(metrics.get("train_seconds")),
        },
        "test": test,
        "valid_history": history,
    }
    return _json(body)


@router.get(
    "/stats",
    response_model=StatsResponse,
    summary="Request rate, cache hit ratio and latency percentiles from this process's own metrics",
)
async def stats(gateway: GatewayDep) -> Response:
    enabled = gateway.settings.observability.metrics
    snap = collect() if enabled else Snapshot(taken=time.time())
    return _json({"metrics": "enabled" if enabled else "disabled", **summarise(snap)})
