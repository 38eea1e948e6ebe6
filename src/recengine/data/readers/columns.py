"""Which column of a table plays which role: one alias table, one resolver, for interaction and item files."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields

from recengine.errors import DataError

# Known column names per role, normalised (lower case, no "_", "-" or spaces), in order of preference.
ALIASES: dict[str, tuple[str, ...]] = {
    "user": ("userid", "user", "uid", "customerid", "customer", "visitorid", "reviewerid", "clientid", "sessionid"),
    "item": (
        "itemid", "item", "movieid", "id", "iid", "productid", "product", "asin", "articleid", "trackid", "bookid",
    ),
    "timestamp": (
        "timestamp", "time", "ts", "datetime", "date", "unixtime", "unixtimestamp", "eventtime", "createdat",
    ),
    "rating": ("rating", "score", "stars", "rate"),
    "event": ("event", "eventtype", "action", "interaction", "interactiontype"),
    "weight": ("weight", "count", "quantity"),
    "title": ("title", "name", "itemname", "productname"),
    "categories": ("categories", "category", "genres", "genre", "tags", "tag"),
}  # fmt: skip
INTERACTION_ROLES = ("user", "item", "timestamp", "rating", "event", "weight")
ITEM_ROLES = ("item", "title", "categories")
# A bare "id" names the item in an item file; in an interaction file it is more often the row's or event's own id.
ITEM_FILE_ONLY = frozenset({"id"})


def aliases(role: str, item_file: bool = False) -> tuple[str, ...]:
    """The names that find ``role`` in an interaction file, or (``item_file``) in an item metadata file."""
    return tuple(a for a in ALIASES[role] if item_file or a not in ITEM_FILE_ONLY)


def interaction_aliases() -> frozenset[str]:
    """Every name that marks a column of an interaction file: a header line holding one is a header."""
    return frozenset(a for role in INTERACTION_ROLES for a in aliases(role))


def normalise(name: str) -> str:
    return re.sub(r"[\s_\-]", "", name).lower()


def resolve_columns(
    columns: Sequence[str],
    roles: Iterable[str],
    file: str,
    chosen: Mapping[str, str | None] | None = None,
    item_file: bool = False,
) -> dict[str, str]:
    """Role → column for every role found, roles in the order given.

    A ``chosen`` column must exist (matched exactly, else ignoring case, ``_`` and ``-``: :class:`DataError` when it
    does not); any other role takes the first of its aliases present in ``columns`` that no earlier role has taken.
    """
    by_norm: dict[str, str] = {}
    for c in columns:
        by_norm.setdefault(normalise(c), c)
    found: dict[str, str] = {}
    for role in roles:
        wanted = (chosen or {}).get(role)
        if wanted is not None:
            match = wanted if wanted in columns else by_norm.get(normalise(wanted))
            if match is None:
                raise DataError(
                    f"{file}: line 1: no column {wanted!r} for the {role} (the header has: {listing(columns)})"
                )
            found[role] = match
            continue
        for alias in aliases(role, item_file):
            if alias in by_norm and by_norm[alias] not in found.values():
                found[role] = by_norm[alias]
                break
    return found


def missing_column(file: str, what: str, expected: str, columns: Sequence[str]) -> DataError:
    return DataError(
        f"{file}: line 1: missing required {what} column (expected one of {expected}; "
        f"the header has: {listing(columns)})"
    )


def listing(columns: Sequence[str], limit: int = 12) -> str:
    shown = ", ".join(repr(c) for c in columns[:limit])
    return shown + (f", … ({len(columns)} columns)" if len(columns) > limit else "") if columns else "no columns"


@dataclass(frozen=True)
class ColumnMapping:
    """Which column of a CSV/TSV/Parquet file plays which role; ``None``: find it by its usual names."""

    user: str | None = None
    item: str | None = None
    timestamp: str | None = None
    rating: str | None = None
    event: str | None = None
    weight: str | None = None

    @classmethod
    def from_options(cls, **options: str | None) -> ColumnMapping:
        unknown = set(options) - {f.name for f in fields(cls)}
        if unknown:
            raise DataError(f"unknown column role(s) {sorted(unknown)}: expected {', '.join(INTERACTION_ROLES)}")
        return cls(**{k: (v or None) for k, v in options.items()})

    def resolve(self, columns: Iterable[str], file: str) -> dict[str, str]:
        """Role → column in the file; :class:`DataError` when user, item or a named column is missing."""
        columns = list(columns)
        chosen = {role: getattr(self, role) for role in INTERACTION_ROLES}
        found = resolve_columns(columns, INTERACTION_ROLES, file, chosen)
        for role in ("user", "item"):
            if role not in found:
                expected = f"{', '.join(aliases(role)[:4])}, or pass --{role}-col"
                raise missing_column(file, role, expected, columns)
        return found
