"""The item catalogue: items added, changed and retired through the API, durable, shared by every replica.

    records.py       CatalogueItem: title, categories, attributes, available (+ the version of its last write)
    store.py         the CatalogueStore protocol (put, get, mark_unavailable, version, changes)
    sqlite_store.py  the embedded default: one SQLite file
    redis_store.py   shared by every replica of a Redis deployment
    view.py          one process's mirror, kept current by a version check per request, applied to every model
    overlay.py       what the catalogue changes about one model (unavailable items, moved categories)
    export.py        the catalogue as the items table of the next training data set (no serving imports)

``open_catalogue(settings)`` builds the store and view the settings ask for (the app's lifespan calls it);
``source_of(settings)`` says where that catalogue is, as ``export.export_catalogue`` takes it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from recengine.errors import ConfigError

if TYPE_CHECKING:
    from recengine.catalogue.store import CatalogueStore
    from recengine.catalogue.view import CatalogueView
    from recengine.settings import Settings


def backend_of(settings: Settings) -> str:
    """``sqlite`` or ``redis``: ``catalogue.backend`` with "auto" decided (Redis when ``cache.redis_url`` is set)."""
    backend = settings.catalogue.backend
    if backend == "auto":
        return "redis" if settings.cache.redis_url else "sqlite"
    return backend


def source_of(settings: Settings) -> str:
    """Where the settings keep the catalogue, as ``export_catalogue`` takes it: the SQLite file, or the Redis URL
    with ``?prefix=`` (the default of a retrain's ``--catalogue``)."""
    if backend_of(settings) == "redis":
        url = settings.cache.redis_url
        if not url:
            raise ConfigError("catalogue.backend = 'redis' needs cache.redis_url")
        return f"{url}{'&' if '?' in url else '?'}prefix={settings.catalogue.redis_prefix}"
    return str(settings.catalogue.db_path(settings.serving.artifacts_dir))


def open_store(settings: Settings) -> CatalogueStore:
    """The store ``settings.catalogue`` asks for; nothing is read yet (a Redis store does not connect)."""
    section, url = settings.catalogue, settings.cache.redis_url
    if backend_of(settings) == "redis":
        if not url:
            raise ConfigError("catalogue.backend = 'redis' needs cache.redis_url")
        from recengine.catalogue.redis_store import RedisCatalogueStore
        from recengine.serving.redis import redis_client

        # Writes and the full read at start-up may take a while; the check before each request must not.
        return RedisCatalogueStore(
            redis_client(url, 5000.0),
            section.redis_prefix,
            checker=redis_client(url, settings.cache.redis_timeout_ms),
        )
    from recengine.catalogue.sqlite_store import SqliteCatalogueStore

    return SqliteCatalogueStore(section.db_path(settings.serving.artifacts_dir))


async def open_catalogue(settings: Settings) -> CatalogueView:
    """The store and this process's view of it, with every record read (a store that cannot answer now is retried
    by the view's next sync)."""
    from recengine.catalogue.view import CatalogueView

    view = CatalogueView(
        open_store(settings),
        check_interval_s=settings.catalogue.check_interval_ms / 1000.0,
        retry_after_s=settings.cache.retry_after_s,
    )
    await view.start()
    return view
