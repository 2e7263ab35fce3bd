"""Per-key requests/min and tokens/min as token buckets, shared through Redis.

One Lua script checks and charges both buckets atomically on the Redis server's clock, so every
router process and Ray replica enforces the same budget. Without Redis, or while Redis is down,
the same buckets run in this process; the limiter goes back to Redis once it answers again.
Tokens are charged up front as prompt + max_tokens (as OpenAI estimates), and the unused part
is credited back when the request ends.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import structlog
from redis import asyncio as aioredis
from redis.exceptions import RedisError

log = structlog.get_logger("archrouter.ratelimit")

# KEYS: request bucket, token bucket. ARGV: rpm, tpm, request cost, token cost.
# Returns {allowed, remaining requests, remaining tokens, retry-after ms}.
_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function level(key, cap)
  local v = redis.call('HMGET', key, 'level', 'ts')
  local lvl, ts = tonumber(v[1]), tonumber(v[2])
  if lvl == nil then return cap, now end
  return math.min(cap, lvl + (now - ts) * cap / 60000), now
end
local rpm, tpm = tonumber(ARGV[1]), tonumber(ARGV[2])
local rc, tc = tonumber(ARGV[3]), tonumber(ARGV[4])
local r = level(KEYS[1], rpm)
local k = level(KEYS[2], tpm)
local wait = 0
if r < rc then wait = math.max(wait, (rc - r) * 60000 / rpm) end
if tc > 0 and k < math.min(tc, tpm) then wait = math.max(wait, (math.min(tc, tpm) - k) * 60000 / tpm) end
local ok = 0
if wait == 0 then r = r - rc; k = k - tc; ok = 1 end
redis.call('HSET', KEYS[1], 'level', r, 'ts', now)
redis.call('HSET', KEYS[2], 'level', k, 'ts', now)
redis.call('PEXPIRE', KEYS[1], 120000)
redis.call('PEXPIRE', KEYS[2], 120000)
return {ok, math.floor(r), math.floor(k), math.ceil(wait)}
"""


@dataclass
class Verdict:
    allowed: bool
    rpm: int
    tpm: int
    remaining_requests: int
    remaining_tokens: int
    retry_after_s: float

    def headers(self) -> dict[str, str]:
        h = {
            "x-ratelimit-limit-requests": str(self.rpm),
            "x-ratelimit-remaining-requests": str(max(0, self.remaining_requests)),
            "x-ratelimit-reset-requests": f"{60 * (self.rpm - max(0, self.remaining_requests)) / self.rpm:.3f}s",
            "x-ratelimit-limit-tokens": str(self.tpm),
            "x-ratelimit-remaining-tokens": str(max(0, self.remaining_tokens)),
            "x-ratelimit-reset-tokens": f"{60 * (self.tpm - max(0, self.remaining_tokens)) / self.tpm:.3f}s",
        }
        if not self.allowed:
            h["retry-after"] = str(max(1, math.ceil(self.retry_after_s)))
        return h


class LocalBuckets:
    """The same buckets in process memory (one router process's view)."""

    def __init__(self) -> None:
        self.levels: dict[str, tuple[float, float]] = {}

    def _level(self, key: str, cap: int, now: float) -> float:
        lvl, ts = self.levels.get(key, (cap, now))
        return min(cap, lvl + (now - ts) * 1000 * cap / 60000)

    def take(self, who: str, rpm: int, tpm: int, requests: int, tokens: int) -> tuple[int, int, int, int]:
        now = time.monotonic()
        r, k = self._level(who + ":r", rpm, now), self._level(who + ":t", tpm, now)
        wait = 0.0
        if r < requests:
            wait = max(wait, (requests - r) * 60000 / rpm)
        if tokens > 0 and k < min(tokens, tpm):
            wait = max(wait, (min(tokens, tpm) - k) * 60000 / tpm)
        ok = wait == 0
        if ok:
            r, k = r - requests, k - tokens
        self.levels[who + ":r"], self.levels[who + ":t"] = (r, now), (k, now)
        return int(ok), math.floor(r), math.floor(k), math.ceil(wait)


class RateLimiter:
    def __init__(self, redis_url: str | None, *, default_rpm: int, default_tpm: int, prefix: str = "archrouter:rl",
                 retry_redis_s: float = 5.0, on_mode=None):
        self.retry_redis_s = retry_redis_s
        self.redis = aioredis.from_url(redis_url, socket_timeout=0.5, socket_connect_timeout=0.5) if redis_url \
            else None
        self.default_rpm, self.default_tpm, self.prefix = default_rpm, default_tpm, prefix
        self.local = LocalBuckets()
        self._script = self.redis.register_script(_LUA) if self.redis else None
        self._redis_down_since: float | None = None
        self._on_mode = on_mode or (lambda mode: None)
        self._on_mode("redis" if self.redis else "local")

    @property
    def mode(self) -> str:
        return "redis" if self.redis is not None and self._redis_down_since is None else "local"

    async def take(self, who: str, *, rpm: int | None, tpm: int | None, tokens: int) -> Verdict:
        rpm, tpm = rpm or self.default_rpm, tpm or self.default_tpm
        res = None
        if self._script is not None and self._redis_usable():
            try:
                res = await self._script(keys=[f"{self.prefix}:{who}:r", f"{self.prefix}:{who}:t"],
                                         args=[rpm, tpm, 1, tokens])
                if self._redis_down_since is not None:
                    log.info("ratelimit_redis_back")
                    self._redis_down_since = None
                    self._on_mode("redis")
            except (RedisError, OSError) as exc:
                if self._redis_down_since is None:
                    log.warning("ratelimit_redis_down_using_local", error=str(exc))
                    self._on_mode("local")
                self._redis_down_since = time.monotonic()
        if res is None:
            res = self.local.take(who, rpm, tpm, 1, tokens)
        ok, rem_r, rem_t, wait_ms = (int(x) for x in res)
        return Verdict(bool(ok), rpm, tpm, rem_r, rem_t, wait_ms / 1000)

    async def credit(self, who: str, tokens: int, tpm: int | None) -> None:
        """Give back tokens charged up front but not used."""
        if tokens <= 0:
            return
        tpm = tpm or self.default_tpm
        if self.mode == "redis":
            try:
                key = f"{self.prefix}:{who}:t"
                await self.redis.hincrbyfloat(key, "level", tokens)
                return
            except (RedisError, OSError):
                pass
        lvl, ts = self.local.levels.get(who + ":t", (tpm, time.monotonic()))
        self.local.levels[who + ":t"] = (min(tpm, lvl + tokens), ts)

    def _redis_usable(self) -> bool:
        return self._redis_down_since is None or time.monotonic() - self._redis_down_since > self.retry_redis_s

    async def close(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()
