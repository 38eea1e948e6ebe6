"""The catalogue in Redis, shared by every replica: four keys under one prefix, every write one Lua script.

    <prefix>:items        hash  item id → record body (JSON: title, categories, attributes, time)
    <prefix>:log          zset  item id → catalogue version of its last write
    <prefix>:unavailable  set   ids of the unavailable items
    <prefix>:version      the counter
    <prefix>:epoch        this catalogue's random name (see CatalogueVersion), set by its first write

Availability and version live beside the body, so no script ever decodes or re-encodes JSON (Redis' cjson rounds
numbers to 14 digits). ``changes`` reads the counter and the records in the same script: one snapshot.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from recengine.catalogue.records import CatalogueItem, decode_body, encode_body
from recengine.catalogue.store import CatalogueVersion, Changes, WriteResult
from recengine.errors import StorageUnavailable

DEFAULT_PREFIX = "recengine:catalogue"
#: What an outage looks like from redis-py (as ``serving.redis.REDIS_ERRORS``; training must not import serving).
_REDIS_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError)

# KEYS: items, log, unavailable, version, epoch. ARGV: a new epoch (kept only by the first write), n, then
# (id, body, available 1|0) per item.
PUT_LUA = """
local n = tonumber(ARGV[2])
if n == 0 then return {tonumber(redis.call('GET', KEYS[4]) or '0')} end
redis.call('SET', KEYS[5], ARGV[1], 'NX')
local v = redis.call('INCR', KEYS[4])
local out = {v}
for i = 0, n - 1 do
  local id, body, avail = ARGV[3 + i * 3], ARGV[4 + i * 3], ARGV[5 + i * 3]
  out[#out + 1] = redis.call('HSET', KEYS[1], id, body)
  redis.call('ZADD', KEYS[2], v, id)
  if avail == '1' then redis.call('SREM', KEYS[3], id) else redis.call('SADD', KEYS[3], id) end
end
return out
"""

# KEYS: as PUT. ARGV: a new epoch, id, fallback body ('' for none). Returns {0} (no record), or
# {changed 1|2, body, version}.
MARK_LUA = """
local id = ARGV[2]
if redis.call('HEXISTS', KEYS[1], id) == 0 then
  if ARGV[3] == '' then return {0} end
  redis.call('HSET', KEYS[1], id, ARGV[3])
elseif redis.call('SISMEMBER', KEYS[3], id) == 1 then
  return {2, redis.call('HGET', KEYS[1], id), redis.call('ZSCORE', KEYS[2], id)}
end
redis.call('SET', KEYS[5], ARGV[1], 'NX')
local v = redis.call('INCR', KEYS[4])
redis.call('ZADD', KEYS[2], v, id)
redis.call('SADD', KEYS[3], id)
return {1, redis.call('HGET', KEYS[1], id), tostring(v)}
"""

# KEYS: as PUT. ARGV: after. Returns {version, epoch, id, body, unavailable 0|1, item version, …}.
CHANGES_LUA = """
local out = {tonumber(redis.call('GET', KEYS[4]) or '0'), redis.call('GET', KEYS[5]) or ''}
local rows = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. ARGV[1], '+inf', 'WITHSCORES')
for i = 1, #rows, 2 do
  local id = rows[i]
  out[#out + 1] = id
  out[#out + 1] = redis.call('HGET', KEYS[1], id)
  out[#out + 1] = redis.call('SISMEMBER', KEYS[3], id)
  out[#out + 1] = rows[i + 1]
end
return out
"""


def catalogue_keys(prefix: str = DEFAULT_PREFIX) -> list[str]:
    return [f"{prefix}:items", f"{prefix}:log", f"{prefix}:unavailable", f"{prefix}:version", f"{prefix}:epoch"]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def decode_changes(reply: Sequence[Any]) -> Changes:
    """The reply of :data:`CHANGES_LUA` as :class:`Changes` (shared with the synchronous export)."""
    items = []
    for i in range(2, len(reply), 4):
        item_id, body, unavailable, version = reply[i : i + 4]
        items.append(decode_body(_text(item_id), body, not int(unavailable), int(float(_text(version)))))
    items.sort(key=lambda item: (item.version, item.item_id))
    return Changes(_text(reply[1]), int(reply[0]), items)


class RedisCatalogueStore:
    """The catalogue in Redis. Every Redis failure is a :class:`StorageUnavailable` (nothing stored on a write);
    the caller decides whether to refuse (writes) or carry on with what it has (a replica's version check)."""

    backend = "redis"

    def __init__(
        self, client: Redis, prefix: str = DEFAULT_PREFIX, *, checker: Redis | None = None, owns_client: bool = True
    ) -> None:
        self.client = client
        self.checker = checker or client
        """For :meth:`version`, asked before every request: a client with the short serving timeout, where writes
        and full reads get a patient one."""
        self.prefix = prefix
        self.keys = catalogue_keys(prefix)
        self._owns_client = owns_client
        self._put = client.register_script(PUT_LUA)
        self._mark = client.register_script(MARK_LUA)
        self._changes = client.register_script(CHANGES_LUA)

    def _unavailable(self, exc: BaseException, what: str) -> StorageUnavailable:
        return StorageUnavailable(f"Redis catalogue {self.prefix}: unavailable ({exc}); {what}")

    async def _call(self, what: str, coro: Any) -> Any:
        try:
            return await coro
        except _REDIS_ERRORS as exc:
            raise self._unavailable(exc, what) from None

    async def put(self, items: Sequence[CatalogueItem]) -> WriteResult:
        args: list[str | int | bytes] = [secrets.token_hex(8), len(items)]
        for item in items:
            args += [item.item_id, encode_body(item), 1 if item.available else 0]
        reply = await self._call("nothing stored", self._put(keys=self.keys, args=args))
        return WriteResult(int(reply[0]), [bool(int(flag)) for flag in reply[1:]])

    async def get(self, item_id: str) -> CatalogueItem | None:
        async def read() -> Any:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.hget(self.keys[0], item_id)
                pipe.sismember(self.keys[2], item_id)
                pipe.zscore(self.keys[1], item_id)
                return await pipe.execute()

        body, unavailable, version = await self._call("not read", read())
        if body is None:
            return None
        return decode_body(item_id, body, not int(unavailable), int(version or 0))

    async def mark_unavailable(self, item_id: str, fallback: CatalogueItem | None = None) -> CatalogueItem | None:
        body = encode_body(fallback) if fallback is not None else b""
        args: list[str | bytes] = [secrets.token_hex(8), item_id, body]
        reply = await self._call("nothing stored", self._mark(keys=self.keys, args=args))
        if not int(reply[0]):
            return None
        return decode_body(item_id, reply[1], False, int(float(_text(reply[2]))))

    async def version(self) -> CatalogueVersion:
        number, epoch = await self._call("version not read", self.checker.mget(self.keys[3], self.keys[4]))
        return CatalogueVersion(_text(epoch) if epoch else "", int(number) if number else 0)

    async def changes(self, after: int = 0) -> Changes:
        reply = await self._call("changes not read", self._changes(keys=self.keys, args=[after]))
        return decode_changes(reply)

    async def close(self) -> None:
        if not self._owns_client:
            return
        for client in {id(self.client): self.client, id(self.checker): self.checker}.values():
            with contextlib.suppress(*_REDIS_ERRORS):
                await client.aclose()
