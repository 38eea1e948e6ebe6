"""The FastAPI application: ``create_app(settings)`` builds it; every client is built in the lifespan.

    recengine serve                       # the CLI runs uvicorn on create_app (factory=True)
    app = create_app(load_settings())     # tests, embedding

Nothing connects at import time: Redis clients, the event log, the thread pool and the models are created when
the server starts and closed when it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Mapping
from functools import partial
from typing import Any

from fastapi import FastAPI

from recengine.api import problems
from recengine.api.gateway import Gateway, maintain, publish_event_log, publish_model
from recengine.api.middleware import GatewayMiddleware
from recengine.api.runtime import runtime_config
from recengine.catalogue import open_catalogue
from recengine.data.events import merged_into
from recengine.engines import load_engine
from recengine.engines.base import Engine
from recengine.errors import StorageUnavailable
from recengine.observability.logging import configure_logging
from recengine.serving.attribution import Attributor, ImpressionRecorder
from recengine.serving.impressions import open_impression_store
from recengine.serving.ingest import EventIngest
from recengine.serving.registry import ModelRegistry
from recengine.serving.service import RecommendationService
from recengine.serving.stores import Stores, open_stores
from recengine.settings import Settings, load_settings, startup_warnings

log = logging.getLogger("recengine.api")


def create_app(
    settings: Settings | None = None,
    *,
    engines: Mapping[str, Engine] | None = None,
) -> FastAPI:
    """The application. ``engines`` serves engine objects directly, beside (or instead of) the artifacts."""
    settings = settings or load_settings()
    serving = settings.serving

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        obs = settings.observability
        configure_logging(obs.log_level, obs.log_format)
        for warning in startup_warnings(settings):
            log.warning(warning)
        # Before the models: each loads with the catalogue's new items placed in it, before it serves.
        catalogue = await open_catalogue(settings)
        registry = ModelRegistry(serving.artifacts_dir, loader=catalogue.loading(load_engine))
        registry.on_swap(catalogue.attach)
        if obs.metrics:
            registry.on_swap(publish_model)
        results = await asyncio.to_thread(registry.reload)
        for result in results:
            if result.status == "refused":
                log.error("model not loaded: %s", result.error)
        for name, engine in (engines or {}).items():
            registry.put(name, engine)
        stores = await open_stores(settings)
        recorder, attribution = _attribution(settings, stores)
        observer = None
        if obs.metrics:
            from recengine.observability.observer import MetricsObserver

            observer = MetricsObserver()
        service = RecommendationService(
            registry,
            stores.cache,
            stores.history,
            runtime_config(settings),
            max_k=serving.max_k,
            breaker_failures=serving.breaker_failures,
            breaker_reset_s=serving.breaker_reset_s,
            observer=observer,
            max_inflight=serving.inference_workers,
            catalogue=catalogue,
            impressions=recorder,
        )
        ingest = EventIngest(stores.events, stores.history)
        gw = Gateway(
            settings=settings, base_settings=settings, service=service, registry=registry, stores=stores, ingest=ingest,
            catalogue=catalogue,
            attribution=attribution,
        )  # fmt: skip
        if recorder is not None:
            recorder.start()
        if stores.redis is None:
            # In-process histories die with the process; the durable log brings them back — the events the seed
            # data set does not hold already (a merged data set holds the log up to its watermark).
            state = await stores.events.state()
            seeded = merged_into(settings.data.dir, state.log_id)
            if state.trimmed_up_to > seeded:
                log.warning(
                    "the event log was merged and trimmed up to #%d, but data.dir (%s) holds it only up to #%d: "
                    "histories miss those events; point data.dir at the data set recengine data merge-events wrote",
                    state.trimmed_up_to,
                    settings.data.dir,
                    seeded,
                )
            replayed = await ingest.replay(after=seeded)
            if replayed:
                log.info("replayed %d logged events into the in-process histories", replayed)
        else:
            await gw.sync_overrides()
        if obs.metrics:
            # The log-full alert needs the backlog from the start; Redis may be down now (the upkeep retries).
            with contextlib.suppress(StorageUnavailable):
                await publish_event_log(gw)
        app.state.gateway = gw
        # Models, seed histories and catalogues live as long as the process: move them out of the collector's
        # reach so that a full collection does not walk them (tens of ms of pause on a large catalogue).
        gc.collect()
        gc.freeze()
        stop_upkeep = asyncio.Event()
        upkeep = None
        if serving.reload_poll_s > 0:
            upkeep = asyncio.create_task(maintain(gw, serving.reload_poll_s, stop_upkeep))
        try:
            yield
        finally:
            gc.unfreeze()
            if upkeep is not None:
                stop_upkeep.set()
                upkeep.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await upkeep
            if recorder is not None:
                await recorder.close()
                await recorder.store.close()
            await stores.close()
            await catalogue.store.close()
            await service.close()
            if obs.metrics:
                from recengine.observability.metrics import mark_worker_exit

                mark_worker_exit()

    app = FastAPI(
        title="recengine",
        version="0.1.0",
        summary="Recommendations from transformer, two-tower and baseline engines behind one API.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    problems.install(app)
    from recengine.api.routes import admin, events, experiments, explore, health, index, items, recommendations
    from recengine.api.routes import engines as engines_routes
    from recengine.console import install as install_console

    for module in (index, recommendations, items, events, engines_routes, explore, health, admin, experiments):
        app.include_router(module.router)
    install_console(app)  # the web console at /ui, on the routes above
    app.add_middleware(GatewayMiddleware, max_body=serving.max_body_bytes, metrics=settings.observability.metrics)
    app.openapi = partial(  # type: ignore[method-assign]
        _openapi, app, serving.max_k, serving.max_batch_events, settings.catalogue.max_batch_items
    )
    return app


def _attribution(settings: Settings, stores: Stores) -> tuple[ImpressionRecorder | None, Attributor | None]:
    """The impression recorder and the attributor over the impression store (none when impressions are off)."""
    serving = settings.serving
    on_record = on_attributed = None
    if settings.observability.metrics:
        from recengine.observability import metrics

        on_record, on_attributed = metrics.record_impression, metrics.record_attributed
        metrics.set_experiment_arms(settings.routing.experiment)
    if not serving.impressions:
        return None, None
    store = open_impression_store(serving, stores.redis)
    recorder = ImpressionRecorder(store, on_record=on_record)
    return recorder, Attributor(store, recorder, serving.attribution_window_s, on_attributed)


def _cap_k(node: Any, max_k: int) -> None:
    """Set the configured ``serving.max_k`` as the maximum of a ``k`` schema (also inside ``anyOf``)."""
    if isinstance(node, dict):
        if "maximum" in node and node.get("type") == "integer":
            node["maximum"] = max_k
        for branch in node.get("anyOf", ()):
            _cap_k(branch, max_k)


def _openapi(app: FastAPI, max_k: int, max_batch: int, max_items: int = 1000) -> dict[str, Any]:
    """FastAPI's schema, with every error response documented as what it is (a problem+json document) and the
    bounds this deployment enforces (``serving.max_k``, ``serving.max_batch_events``,
    ``catalogue.max_batch_items``) written in, so the document says exactly what is accepted."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    from fastapi.openapi.utils import get_openapi

    from recengine.api.schemas import Problem

    schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    components["Problem"] = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    ref = {"$ref": "#/components/schemas/Problem"}
    for component in components.values():
        _cap_k(component.get("properties", {}).get("k"), max_k)
    if "ItemsBatchIn" in components:
        components["ItemsBatchIn"]["properties"]["items"]["maxItems"] = max_items
    for path in schema.get("paths", {}).values():
        for op in path.values():
            for parameter in op.get("parameters", ()):
                if parameter.get("name") == "k":
                    _cap_k(parameter.get("schema"), max_k)
            for content in op.get("requestBody", {}).get("content", {}).values():
                for branch in content.get("schema", {}).get("oneOf", ()):
                    if branch.get("type") == "array":  # a batch of events
                        branch["maxItems"] = max_batch
            responses = op.setdefault("responses", {})
            if "requestBody" in op:
                responses.setdefault("400", {"description": "The body is not valid JSON."})
            has_input = "requestBody" in op or any(
                p.get("in") in ("query", "path", "header") for p in op.get("parameters", ())
            )
            if has_input:
                responses.setdefault("422", {"description": "A field is malformed; the detail names it."})
            for code, response in responses.items():
                if code.isdigit() and int(code) >= 400:
                    response["content"] = {problems.PROBLEM_TYPE: {"schema": ref}}
    app.openapi_schema = schema
    return schema
