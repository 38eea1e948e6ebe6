"""One catalogue record: what ``PUT /api/v1/items/{item_id}`` stores, and its JSON form in either store.

A record is the whole item (PUT replaces, never merges): a title, categories, free-form attributes (JSON scalars;
the numeric ones are the features the neural engine's item tower reads, e.g. ``price``) and whether it may be
recommended. The store adds the catalogue ``version`` of the write that last changed it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

#: An attribute value: a JSON scalar. Numbers are the ones the neural engine can read as features.
AttributeValue = str | int | float | bool | None


@dataclass(frozen=True, slots=True)
class CatalogueItem:
    item_id: str
    title: str | None = None
    categories: tuple[str, ...] = ()
    attributes: dict[str, AttributeValue] = field(default_factory=dict)
    available: bool = True
    updated_at: float = 0.0
    """Unix seconds of the write (the writer's clock)."""
    version: int = 0
    """The catalogue version of the write that last changed this record (0: not stored yet)."""

    def numeric(self, name: str) -> float | None:
        """Attribute ``name`` as a finite number, None when absent, null or not a number."""
        value = self.attributes.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        number = float(value)
        return number if math.isfinite(number) else None

    def with_version(self, version: int, available: bool | None = None) -> CatalogueItem:
        return replace(self, version=version, available=self.available if available is None else available)

    def to_json(self) -> dict[str, Any]:
        """The API's shape of the record (``GET /api/v1/items/{item_id}``)."""
        return {
            "item_id": self.item_id,
            "title": self.title,
            "categories": list(self.categories),
            "attributes": dict(self.attributes),
            "available": self.available,
            "updated_at": self.updated_at,
            "version": self.version,
        }


def encode_body(item: CatalogueItem) -> bytes:
    """The stored body of a record: everything but the id, the availability and the version, which each store
    keeps beside it (Redis: a set and a sorted set; SQLite: columns), so that neither has to rewrite JSON."""
    return orjson.dumps(
        {"t": item.title, "c": list(item.categories), "a": item.attributes, "u": item.updated_at},
        option=orjson.OPT_SORT_KEYS,
    )


def decode_body(item_id: str, raw: bytes | str, available: bool, version: int) -> CatalogueItem:
    data = orjson.loads(raw)
    return CatalogueItem(
        item_id=item_id,
        title=data.get("t"),
        categories=tuple(data.get("c") or ()),
        attributes=dict(data.get("a") or {}),
        available=bool(available),
        updated_at=float(data.get("u") or 0.0),
        version=int(version),
    )


def shortest_float(value: object) -> float:
    """A float32 value from a model's catalogue as the number it was written as (47.31, not 47.310001373291016)."""
    return float(str(value))
