"""Each user's recent items, newest last — what the sequence engines read, so an event changes the next answer.

A user's history is the *seed* (their interactions in the processed data set, the same in every replica) followed by
the *live* items that arrived as events since. Only the live part is stored: in process (the embedded default) or in
Redis lists capped at ``max_len`` (shared by every worker and replica). Items are external ids, so a history stays
valid across model versions with different vocabularies.

The version returned with a history changes with every append; it is part of the cache key.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Protocol, runtime_checkable

import numpy as np
from redis.asyncio import Redis

from recengine.data.dataset import Dataset
from recengine.serving.redis import RedisHealth

HIST_PREFIX = "recengine:hist:"
VERSION_PREFIX = "recengine:histv:"
#: How many users have a live history in Redis (counting their lists with SCAN would walk the whole keyspace);
#: outside ``HIST_PREFIX``, so that no user id can name it.
USERS_KEY = "recengine:histusers"


@dataclass(frozen=True)
class History:
    items: list[str]
    """External item ids, oldest first, at most ``max_len``."""
    version: str


class SeedHistories:
    """Read-only histories from a processed data set (all splits), decoded lazily to external ids."""

    def __init__(self, sequences: dict[str, np.ndarray], item_ids: list[str], tag: str) -> None:
        self._sequences = sequences
        self._item_ids = item_ids
        self.tag = tag
        # Decoded on first use and kept: a list of references to the id strings the catalogue already holds.
        self._decoded: dict[str, list[str]] = {}

    @classmethod
    def empty(cls) -> SeedHistories:
        return cls({}, [""], "0")

    @classmethod
    def from_dataset(cls, dataset: Dataset) -> SeedHistories:
        seqs = dataset.sequences(max_split=2)
        by_user = {dataset.users.ids[u]: seqs[u] for u in range(1, dataset.n_users + 1) if len(seqs[u])}
        return cls(by_user, dataset.items.ids.ids, dataset.content_hash[:8])

    def __len__(self) -> int:
        return len(self._sequences)

    def lengths(self) -> dict[str, int]:
        """Every seeded user's id → history length, in the data set's user order (a new dict each call)."""
        return {user: int(seq.size) for user, seq in self._sequences.items()}

    def get(self, user_id: str, max_len: int) -> list[str]:
        decoded = self._decoded.get(user_id)
        if decoded is None:
            seq = self._sequences.get(user_id)
            if seq is None:
                return []
            ids = self._item_ids
            decoded = self._decoded[user_id] = [ids[i] for i in seq.tolist()]
        return decoded[-max_len:]


def _join(seed: list[str], live: Sequence[str], max_len: int) -> list[str]:
    items = seed + list(live) if live else seed
    return items[-max_len:] if len(items) > max_len else items


@runtime_checkable
class HistoryStore(Protocol):
    max_len: int

    async def get(self, user_id: str) -> History: ...

    async def append(self, user_id: str, item_ids: Sequence[str]) -> None: ...

    async def size(self) -> int:
        """Users with a live history (items from events since the seed), cheaply: no scan of the store."""
        ...

    async def close(self) -> None: ...


class MemoryHistoryStore:
    def __init__(self, max_len: int = 200, seed: SeedHistories | None = None) -> None:
        self.max_len = max_len
        self.seed = seed or SeedHistories.empty()
        self._live: dict[str, deque[str]] = {}
        self._versions: dict[str, int] = {}

    async def get(self, user_id: str) -> History:
        live = self._live.get(user_id)
        items = _join(self.seed.get(user_id, self.max_len), live or (), self.max_len)
        return History(items, f"{self.seed.tag}.m{self._versions.get(user_id, 0)}")

    async def append(self, user_id: str, item_ids: Sequence[str]) -> None:
        if not item_ids:
            return
        live = self._live.get(user_id)
        if live is None:
            live = self._live[user_id] = deque(maxlen=self.max_len)
        live.extend(item_ids)
        self._versions[user_id] = self._versions.get(user_id, 0) + 1

    async def size(self) -> int:
        return len(self._live)

    async def close(self) -> None:
        self._live.clear()


class RedisHistoryStore:
    """Live items in a Redis list per user (``RPUSH`` + ``LTRIM`` in one transaction) and a version
    counter; a user counter (``USERS_KEY``) for :meth:`size`.

    The user counter rises when a user's version counter is created (their first append), in a second
    round trip that only a new user pays. It is an estimate: it misses a user whose append was cut off between
    the two round trips, and counts a user again whose keys were deleted by hand.
    """

    def __init__(self, client: Redis, max_len: int = 200, seed: SeedHistories | None = None) -> None:
        self.client = client
        self.max_len = max_len
        self.seed = seed or SeedHistories.empty()

    async def get(self, user_id: str) -> History:
        # One MULTI/EXEC: another worker's append between the two reads would pair the old items with the new
        # version, and the answer built from them would be cached under that version for ttl_s.
        pipe = self.client.pipeline(transaction=True)
        pipe.lrange(HIST_PREFIX + user_id, 0, -1)
        pipe.get(VERSION_PREFIX + user_id)
        raw, version = await pipe.execute()
        live = [x.decode() for x in raw]
        items = _join(self.seed.get(user_id, self.max_len), live, self.max_len)
        return History(items, f"{self.seed.tag}.r{int(version or 0)}")

    async def append(self, user_id: str, item_ids: Sequence[str]) -> None:
        if not item_ids:
            return
        pipe = self.client.pipeline(transaction=True)
        pipe.rpush(HIST_PREFIX + user_id, *item_ids)
        pipe.ltrim(HIST_PREFIX + user_id, -self.max_len, -1)
        pipe.incr(VERSION_PREFIX + user_id)
        *_, version = await pipe.execute()
        if int(version) == 1:
            await self.client.incr(USERS_KEY)

    async def size(self) -> int:
        return int(await self.client.get(USERS_KEY) or 0)

    async def close(self) -> None:
        await self.client.aclose()


class FailoverHistoryStore:
    """Redis while it answers; otherwise memory, with the appends made meanwhile replayed into Redis on
    recovery.

    The event log — not this store — is the record of truth, so at worst a history is briefly behind.
    """

    def __init__(
        self,
        primary: HistoryStore,
        fallback: MemoryHistoryStore,
        health: RedisHealth,
        max_pending: int = 100_000,
    ) -> None:
        self.primary = primary
        self.fallback = fallback
        self.health = health
        self.max_len = primary.max_len
        self.max_pending = max_pending
        self._pending: deque[tuple[str, list[str]]] = deque(maxlen=max_pending)
        self._flush_lock = asyncio.Lock()

    async def _flush(self) -> None:
        if not self._pending:
            return
        # One replay at a time: concurrent requests after a recovery would otherwise each write the same
        # pending append (duplicates) and pop each other's entries.
        async with self._flush_lock:
            while self._pending:
                user_id, items = self._pending.popleft()
                try:
                    await self.primary.append(user_id, items)
                except BaseException:
                    self._pending.appendleft((user_id, items))
                    raise

    async def get(self, user_id: str) -> History:
        async def from_redis() -> History:
            await self._flush()
            return await self.primary.get(user_id)

        return await self.health.attempt(from_redis, partial(self.fallback.get, user_id))

    async def append(self, user_id: str, item_ids: Sequence[str]) -> None:
        items = list(item_ids)

        async def to_redis() -> None:
            await self._flush()
            await self.primary.append(user_id, items)

        async def to_memory() -> None:
            await self.fallback.append(user_id, items)
            self._pending.append((user_id, items))

        await self.health.attempt(to_redis, to_memory)

    async def size(self) -> int:
        """The size of the store in use: Redis, or memory while Redis is unreachable."""
        return await self.health.attempt(self.primary.size, self.fallback.size)

    async def close(self) -> None:
        await self.fallback.close()
        await self.primary.close()
