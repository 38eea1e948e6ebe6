"""The catalogue as the items table of the next training data set — what the retrain step reads.

    export = export_catalogue("artifacts/catalogue.sqlite3", base=dataset)     # or "redis://host:6379/0"
    export.items        # polars: item, title, categories, <numeric attributes…> — the shape read_items returns
    export.unavailable  # ids marked unavailable (their interactions stay training data; serving never shows them)
    build_dataset(raw, export.items)            # or attach_metadata(item_ids, export.items)
    export.items.write_parquet("items.parquet") # a file `recengine data prepare --items` reads back

Each catalogue record replaces the base data set's row for its item (a PUT replaces the whole item), and items the
base does not have are added. Numeric attributes become numeric columns (the features the neural engine reads):
an attribute is a column when every record that has it gives a number or null; text and boolean attributes are
not features and are left out, as ``read_items`` leaves text columns out. Reading needs nothing from serving.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import polars as pl

from recengine.catalogue.records import CatalogueItem, shortest_float
from recengine.catalogue.redis_store import CHANGES_LUA, DEFAULT_PREFIX, catalogue_keys, decode_changes
from recengine.catalogue.sqlite_store import sqlite_changes, sqlite_connect
from recengine.catalogue.store import Changes
from recengine.data.dataset import Dataset, ItemCatalog
from recengine.errors import DataError


@dataclass(frozen=True)
class CatalogueExport:
    source: str
    """Where the catalogue was read (no password)."""
    version: int
    """The catalogue version read: every write up to it is in ``items``."""
    items: pl.DataFrame
    """``item`` (str), ``title`` (str, null), ``categories`` (list[str]), then one Float64 column per numeric
    attribute, sorted by name; base items first in their index order, then new items by first write."""
    unavailable: list[str]
    """Items marked unavailable, in ``items`` order."""
    n_records: int
    """Records in the catalogue (written through the API)."""


def read_catalogue(source: str | Path) -> Changes:
    """Every record of the catalogue at ``source``: a SQLite file, or ``redis://host:port/db[?prefix=NAME]``."""
    spec = str(source)
    if spec.startswith(("redis://", "rediss://", "unix://")):
        import redis
        from redis.exceptions import RedisError

        parts = urlsplit(spec)
        query = parse_qs(parts.query)
        prefix = query.pop("prefix", [DEFAULT_PREFIX])[0]
        url = urlunsplit(parts._replace(query=urlencode(query, doseq=True)))
        client = redis.Redis.from_url(url, socket_timeout=30)
        try:
            reply = client.register_script(CHANGES_LUA)(keys=catalogue_keys(prefix), args=[0])
        except (RedisError, OSError) as exc:
            raise DataError(f"{_redact(spec)}: cannot read the catalogue ({exc})") from None
        finally:
            client.close()
        return decode_changes(reply)
    conn = sqlite_connect(Path(spec), read_only=True)
    try:
        return sqlite_changes(conn, 0)
    finally:
        conn.close()


def export_catalogue(source: str | Path, base: Dataset | ItemCatalog | None = None) -> CatalogueExport:
    """The catalogue at ``source`` (a SQLite file or a Redis URL, as :func:`read_catalogue`) as an items table,
    laid over ``base``'s item metadata when given (else the catalogue's records alone)."""
    changes = read_catalogue(source)
    catalog = base.items if isinstance(base, Dataset) else base
    records = {r.item_id: r for r in changes.items}
    rows: list[CatalogueItem] = []
    if catalog is not None:
        titles, cats = catalog.titles, catalog.categories
        for index, item_id in enumerate(catalog.ids.ids):
            if index == 0:
                continue
            record = records.pop(item_id, None)
            if record is None:
                title = titles[index] if titles is not None else None
                record = CatalogueItem(
                    item_id=item_id,
                    title=title or None,
                    categories=tuple(cats[index]) if cats is not None else (),
                    attributes={name: shortest_float(col[index]) for name, col in catalog.numeric.items()},
                )
            rows.append(record)
    rows += sorted(records.values(), key=lambda r: (r.version, r.item_id))
    numeric = _numeric_attributes(rows)
    items = pl.DataFrame(
        {
            "item": [r.item_id for r in rows],
            "title": [r.title for r in rows],
            "categories": [list(r.categories) for r in rows],
            **{name: [r.numeric(name) for r in rows] for name in numeric},
        },
        schema={
            "item": pl.String,
            "title": pl.String,
            "categories": pl.List(pl.String),
            **{name: pl.Float64 for name in numeric},
        },
    )
    return CatalogueExport(
        source=_redact(str(source)),
        version=changes.version,
        items=items,
        unavailable=[r.item_id for r in rows if not r.available],
        n_records=len(changes.items),
    )


def _numeric_attributes(rows: list[CatalogueItem]) -> list[str]:
    """Attribute names whose every given value is a number (booleans are not) or null."""
    numeric: dict[str, bool] = {}
    for row in rows:
        for name, value in row.attributes.items():
            is_number = value is None or (isinstance(value, int | float) and not isinstance(value, bool))
            numeric[name] = numeric.get(name, True) and is_number
    return sorted(name for name, ok in numeric.items() if ok and any(r.numeric(name) is not None for r in rows))


def _redact(spec: str) -> str:
    parts = urlsplit(spec)
    if parts.password is None:
        return spec
    netloc = f"{parts.username or ''}:****@{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))
