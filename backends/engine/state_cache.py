"""Recurrent-state prefix caching: restore a sequence's state instead of prefilling its prefix again.

After a turn, a recurrent backend snapshots the sequence's state (safetensors bytes) under a key
chained over the token prefix: key_k = H(key_{k-1} || tokens of block k), key_0 = H(namespace), with
the namespace naming the backend and its checkpoint. Snapshots sit at block boundaries (multiples of
`block` tokens), so a later prompt is looked up with one key per block: the longest present key is
the longest cached prefix, and only the tokens after it are prefilled.

Stores: `MemoryStateStore`, an LRU bounded in bytes (the default), and `RedisStateStore` (TTL and a
byte cap shared by every replica, so all of them reuse each other's states). A store failure is a
miss, never a failed request.
"""

from __future__ import annotations

import hashlib
import threading
import time
from array import array
from collections import OrderedDict
from collections.abc import Sequence
from typing import Protocol

import structlog

log = structlog.get_logger("archrouter.state_cache")


class StateStore(Protocol):
    def present(self, keys: Sequence[str]) -> list[bool]: ...

    def get(self, key: str) -> bytes | None: ...

    def put(self, key: str, value: bytes) -> None: ...

    def size_bytes(self) -> int: ...


class MemoryStateStore:
    """In-process LRU, bounded by total bytes."""

    def __init__(self, max_bytes: int = 1 << 30):
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.evictions = 0

    def present(self, keys: Sequence[str]) -> list[bool]:
        with self._lock:
            return [k in self._items for k in keys]

    def get(self, key: str) -> bytes | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: str, value: bytes) -> None:
        with self._lock:
            old = self._items.pop(key, None)
            self._bytes -= len(old) if old is not None else 0
            if len(value) > self.max_bytes:
                return
            self._items[key] = value
            self._bytes += len(value)
            while self._bytes > self.max_bytes:
                _, dropped = self._items.popitem(last=False)
                self._bytes -= len(dropped)
                self.evictions += 1

    def size_bytes(self) -> int:
        return self._bytes


# Store a value, then forget entries past their TTL and evict least-recently-used ones while the
# total is over the cap. KEYS: value key, index zset (key -> last use), sizes hash, total counter.
# ARGV: value, ttl_s, now, max_bytes. Returns {total bytes, evicted}.
_PUT = """
local n = string.len(ARGV[1])
local ttl, now, cap = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('SET', KEYS[1], ARGV[1], 'EX', ttl)
local old = tonumber(redis.call('HGET', KEYS[3], KEYS[1]) or '0')
redis.call('HSET', KEYS[3], KEYS[1], n)
redis.call('ZADD', KEYS[2], now, KEYS[1])
local total = redis.call('INCRBY', KEYS[4], n - old)
local function forget(k)
  local sz = tonumber(redis.call('HGET', KEYS[3], k) or '0')
  redis.call('DEL', k)
  redis.call('HDEL', KEYS[3], k)
  redis.call('ZREM', KEYS[2], k)
  return redis.call('DECRBY', KEYS[4], sz)
end
for _, k in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now - ttl)) do total = forget(k) end
local evicted = 0
while total > cap do
  local oldest = redis.call('ZRANGE', KEYS[2], 0, 0)
  if #oldest == 0 then break end
  total = forget(oldest[1])
  evicted = evicted + 1
end
return {total, evicted}
"""


class RedisStateStore:
    """Snapshots in Redis with a TTL (refreshed on use) and a byte cap over all of them (LRU)."""

    def __init__(self, url: str, *, ttl_s: int = 3600, max_bytes: int = 1 << 30, prefix: str = "archrouter:state"):
        import redis

        self.redis = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        self.ttl_s, self.max_bytes, self.prefix = ttl_s, max_bytes, prefix
        self._index, self._sizes, self._total = f"{prefix}:index", f"{prefix}:sizes", f"{prefix}:bytes"
        self._put = self.redis.register_script(_PUT)
        self._last_total = 0
        self.evictions = 0

    def key(self, digest: str) -> str:
        return f"{self.prefix}:{digest}"

    def present(self, keys: Sequence[str]) -> list[bool]:
        pipe = self.redis.pipeline(transaction=False)
        for k in keys:
            pipe.exists(self.key(k))
        return [bool(x) for x in pipe.execute()]

    def get(self, key: str) -> bytes | None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.get(self.key(key))
        pipe.expire(self.key(key), self.ttl_s)
        pipe.zadd(self._index, {self.key(key): time.time()}, xx=True)
        value, _, _ = pipe.execute()
        return value

    def put(self, key: str, value: bytes) -> None:
        total, evicted = self._put(
            keys=[self.key(key), self._index, self._sizes, self._total],
            args=[value, self.ttl_s, time.time(), self.max_bytes],
        )
        self._last_total, self.evictions = int(total), self.evictions + int(evicted)

    def size_bytes(self) -> int:
        return self._last_total  # as of this process's last write; Redis holds the shared figure

    def clear(self) -> None:
        """Remove every snapshot under this prefix (tests, operators)."""
        keys = list(self.redis.scan_iter(f"{self.prefix}:*"))
        if keys:
            self.redis.delete(*keys)


class StateCache:
    """Prefix lookups and stores for one backend, with the counters /metrics shows."""

    def __init__(self, store: StateStore, namespace: str, *, block: int = 32):
        self._store = store
        self.namespace = namespace
        self.block = block
        self._root = hashlib.blake2b(namespace.encode(), digest_size=16).digest()
        self.counters = {
            "prefix_hits": 0, "prefix_misses": 0, "prefix_saved_tokens": 0, "prefix_stores": 0,
            "prefix_bytes_read": 0, "prefix_bytes_written": 0, "prefix_errors": 0,
        }

    def keys(self, tokens: Sequence[int], upto: int) -> list[tuple[int, str]]:
        """(length, key) for every block boundary 1..upto of `tokens`, shortest first."""
        out, h = [], self._root
        for end in range(self.block, upto + 1, self.block):
            h = hashlib.blake2b(h + array("q", tokens[end - self.block : end]).tobytes(), digest_size=16).digest()
            out.append((end, h.hex()))
        return out

    def boundary(self, n: int) -> int:
        """The last block boundary at or before `n` tokens."""
        return n - n % self.block

    def lookup(self, tokens: Sequence[int], max_len: int) -> tuple[int, bytes] | None:
        """The longest cached prefix of `tokens` no longer than `max_len`: (its length, state bytes)."""
        candidates = self.keys(tokens, max_len)
        try:
            present = self._store.present([k for _, k in candidates]) if candidates else []
            for (n, key), ok in zip(reversed(candidates), reversed(present), strict=True):
                if ok and (value := self._store.get(key)) is not None:
                    self.counters["prefix_hits"] += 1
                    self.counters["prefix_saved_tokens"] += n
                    self.counters["prefix_bytes_read"] += len(value)
                    return n, value
        except Exception as exc:  # the cache is an optimisation: a broken store is a miss
            self.counters["prefix_errors"] += 1
            log.warning("state_cache_lookup_failed", error=repr(exc))
        self.counters["prefix_misses"] += 1
        return None

    def store(self, tokens: Sequence[int], n: int, state: bytes) -> None:
        """Keep the state reached after `tokens[:n]` (n a block boundary)."""
        if n <= 0 or n % self.block:
            raise ValueError(f"snapshots sit at multiples of {self.block} tokens, got {n}")
        key = self.keys(tokens, n)[-1][1]
        try:
            self._store.put(key, state)
        except Exception as exc:
            self.counters["prefix_errors"] += 1
            log.warning("state_cache_store_failed", error=repr(exc))
            return
        self.counters["prefix_stores"] += 1
        self.counters["prefix_bytes_written"] += len(state)

    def stats(self) -> dict[str, int]:
        return {**self.counters, "prefix_cache_bytes": self._store.size_bytes(),
                "prefix_evictions": getattr(self._store, "evictions", 0)}
