"""What the service is asked and what it answers: one answer shape for every engine and both endpoints."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson


@dataclass(frozen=True)
class RecommendRequest:
    user_id: str | None = None
    k: int = 10
    engine: str | None = None
    exclude_seen: bool = True
    recent_items: tuple[str, ...] = ()
    """Items of the current session, appended to the user's stored history (or the whole history when
    anonymous)."""
    exclude_items: tuple[str, ...] = ()
    include_categories: tuple[str, ...] = ()
    exclude_categories: tuple[str, ...] = ()


@dataclass
class Answer:
    request_id: str
    engine: str
    model_version: str
    fallback: str | None
    cached: bool
    items_json: bytes
    """The items, already serialised: a cached answer is spliced into the response, never decoded."""
    took_ms: float
    user_id: str | None = None
    item_id: str | None = None
    recommendation_id: str = ""
    """Names this answer in the impression log; an event that quotes it is attributed to it."""
    experiment: tuple[str, str] | None = None
    """(experiment name, arm) when an experiment decided the engine."""
    credits: tuple[str, ...] = ()
    """Interleaved answers: the engine credited with each item (also in each item's ``engine``)."""

    @property
    def items(self) -> list[dict[str, Any]]:
        """``[{item_id, score, rank, title?, categories?}, …]``, best first."""
        items: list[dict[str, Any]] = orjson.loads(self.items_json)
        return items

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"request_id": self.request_id, "recommendation_id": self.recommendation_id}
        if self.item_id is not None:
            out["item_id"] = self.item_id
        else:
            out["user_id"] = self.user_id
            out["experiment"] = (
                {"name": self.experiment[0], "arm": self.experiment[1]} if self.experiment is not None else None
            )
        out.update(
            engine=self.engine,
            model_version=self.model_version,
            fallback=self.fallback,
            cached=self.cached,
            items=orjson.Fragment(self.items_json),
            took_ms=self.took_ms,
        )
        return out

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())


def encode_payload(version: str, items: list[dict[str, Any]]) -> bytes:
    """What the cache holds: ``<model version>\\n<items as JSON>`` (a version never contains a newline)."""
    return version.replace("\n", " ").encode() + b"\n" + orjson.dumps(items)


def decode_payload(payload: bytes) -> tuple[str, bytes]:
    """``(model version, items JSON)`` of a cached payload."""
    version, _, items_json = payload.partition(b"\n")
    return version.decode(), items_json
