"""An exact response cache in Redis: the same request, answered the same way, is answered from Redis.

Only requests whose answer is a function of their input are cached: temperature 0, one choice, not
streamed. The key is the SHA-256 of the policy version, the backend the decision chose and the request
body (less `stream`, `stream_options` and `user`), so a new policy, another backend or any other
parameter is a miss. Entries expire after a TTL, and the cache's total size is capped: past the cap
the oldest entries go first (an index sorted by insertion time, sizes in a hash). Off unless
ARCHROUTER_RESPONSE_CACHE=1 and Redis is configured; a Redis error is a miss, counted, never a failure.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import structlog
from prometheus_client import Counter, Gauge
from redis import asyncio as aioredis
from redis.exceptions import RedisError

log = structlog.get_logger("archrouter.response_cache")

# request fields that do not change the answer
_IGNORED = {"stream", "stream_options", "user"}


class ResponseCache:
    def __init__(self, redis_url: str, registry, *, ttl_s: float, max_bytes: int, prefix: str):
        self.redis = aioredis.from_url(redis_url, socket_timeout=1, socket_connect_timeout=1)
        self.ttl_s, self.max_bytes, self.prefix = ttl_s, max_bytes, prefix
        self.lookups = Counter("archrouter_response_cache", "Response cache lookups and stores", ["result"],
                               registry=registry)
        self.bytes = Gauge("archrouter_response_cache_bytes", "Bytes held by the response cache", registry=registry)

    @staticmethod
    def cacheable(body: Any) -> bool:
        return body.temperature == 0 and body.n == 1 and not body.stream

    def key(self, policy_id: str, backend: str, body: Any) -> str:
        data = body.model_dump(mode="json", exclude=_IGNORED, exclude_none=True)
        blob = json.dumps([policy_id, backend, data], sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    async def get(self, key: str) -> dict[str, Any] | None:
        try:
            raw = await self.redis.get(f"{self.prefix}:r:{key}")
        except (RedisError, OSError) as exc:
            self.lookups.labels("error").inc()
            log.warning("response_cache_unavailable", error=str(exc))
            return None
        self.lookups.labels("hit" if raw is not None else "miss").inc()
        return json.loads(raw) if raw is not None else None

    async def put(self, key: str, response: dict[str, Any]) -> bool:
        raw = json.dumps(response, separators=(",", ":")).encode()
        if len(raw) > self.max_bytes:
            self.lookups.labels("too_large").inc()
            return False
        index, sizes, total = f"{self.prefix}:index", f"{self.prefix}:sizes", f"{self.prefix}:bytes"
        now = time.time()
        try:
            async with self.redis.pipeline(transaction=True) as p:
                p.set(f"{self.prefix}:r:{key}", raw, ex=max(1, int(self.ttl_s)))
                p.hget(sizes, key)
                p.hset(sizes, key, len(raw))
                p.zadd(index, {key: now})
                _, old, _, _ = await p.execute()
            used = await self.redis.incrby(total, len(raw) - int(old or 0))
            # expired entries first, then the oldest, until the total is under the cap
            stale = await self.redis.zrangebyscore(index, "-inf", now - self.ttl_s)
            for k in stale:
                used = await self._evict(k)
            while used > self.max_bytes:
                oldest = await self.redis.zrange(index, 0, 0)
                if not oldest:
                    break
                used = await self._evict(oldest[0])
                self.lookups.labels("evicted").inc()
        except (RedisError, OSError) as exc:
            self.lookups.labels("error").inc()
            log.warning("response_cache_unavailable", error=str(exc))
            return False
        self.lookups.labels("store").inc()
        self.bytes.set(used)
        return True

    async def _evict(self, key: bytes | str) -> int:
        k = key.decode() if isinstance(key, bytes) else key
        size = int(await self.redis.hget(f"{self.prefix}:sizes", k) or 0)
        async with self.redis.pipeline(transaction=True) as p:
            p.delete(f"{self.prefix}:r:{k}")
            p.hdel(f"{self.prefix}:sizes", k)
            p.zrem(f"{self.prefix}:index", k)
            p.incrby(f"{self.prefix}:bytes", -size)
            return int((await p.execute())[-1])

    async def clear(self) -> None:
        keys = [k async for k in self.redis.scan_iter(f"{self.prefix}:*")]
        if keys:
            await self.redis.delete(*keys)

    async def close(self) -> None:
        await self.redis.aclose()


def from_settings(settings, registry) -> ResponseCache | None:
    if not settings.response_cache or not settings.redis_url:
        return None
    return ResponseCache(settings.redis_url, registry, ttl_s=settings.response_cache_ttl_s,
                         max_bytes=settings.response_cache_max_bytes, prefix=settings.response_cache_prefix)
