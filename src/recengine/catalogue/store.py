"""The catalogue store protocol: durable item records under one version counter.

    CatalogueStore (protocol)
    ├── SqliteCatalogueStore   the embedded default: one file (WAL, synchronous=FULL), shared by the workers and
    │                          replicas that share the file
    └── RedisCatalogueStore    shared by every replica of a Redis deployment (a hash, a sorted set, a set)

Every write that changes something takes the next catalogue version, and every record it writes carries that
version; ``changes(after)`` returns the records written after a version, with the version read in the same atomic
step. The version comes with the catalogue's epoch, a random name made with it, so that another catalogue (a new
file, a new Redis prefix) whose count starts again is never mistaken for this one. That is all a replica needs to
stay current: compare its version with the store's, fetch what changed. ``tests/catalogue/test_stores.py`` runs
one suite against both stores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol, runtime_checkable

from recengine.catalogue.records import CatalogueItem


class CatalogueVersion(NamedTuple):
    epoch: str
    """Names this catalogue: made at random with it ("" before its first write in Redis). A new SQLite file or a
    new Redis prefix is another catalogue whose numbers start again; a replica that sees another epoch reads the
    catalogue whole, and cached answers of the two never mix (both parts are in the cache key)."""
    number: int
    """Writes that changed something so far (0 before the first)."""


@dataclass(frozen=True, slots=True)
class WriteResult:
    version: int
    """The catalogue version after the write."""
    created: list[bool]
    """Per item written: True when its id was new to the catalogue, False when it replaced a record."""


@dataclass(frozen=True, slots=True)
class Changes:
    epoch: str
    """The catalogue's epoch (see :class:`CatalogueVersion`)."""
    version: int
    """The store's version when the changes were read; every record written up to it is in ``items`` (or was
    written at or before ``after``)."""
    items: list[CatalogueItem]
    """Records whose last write is after ``after``, oldest write first."""


@runtime_checkable
class CatalogueStore(Protocol):
    backend: str
    """``sqlite`` or ``redis``."""

    async def put(self, items: Sequence[CatalogueItem]) -> WriteResult:
        """Store the records (each replaces any record with its id) under one new version, all or none.

        Raises :class:`~recengine.errors.StorageUnavailable` when the store cannot take the write (nothing
        stored)."""
        ...

    async def get(self, item_id: str) -> CatalogueItem | None: ...

    async def mark_unavailable(self, item_id: str, fallback: CatalogueItem | None = None) -> CatalogueItem | None:
        """Mark a record unavailable (a new version, unless it already was); with no record, store ``fallback``
        as an unavailable record (an item the catalogue has not seen, known from a model's training data).
        Returns the record as stored, or None when there is neither a record nor a fallback."""
        ...

    async def version(self) -> CatalogueVersion:
        """The catalogue's epoch and current version number; cheap: replicas ask before each request."""
        ...

    async def changes(self, after: int = 0) -> Changes: ...

    async def close(self) -> None: ...
