"""Recurrent-state prefix caching: restore a sequence's state instead of prefilling its prefix again.

After a turn, a recurrent backend keeps the sequence's state under a key chained over the token
prefix: key_k = H(key_{k-1} || tokens of block k), key_0 = H(namespace), with the namespace naming
the backend and its checkpoint. Snapshots sit at block boundaries (multiples of `block` tokens), so a
later prompt is looked up with one key per block: the longest present key is the longest cached
prefix, and only the tokens after it are prefilled.

Two tiers. In the process, states stay tensors on the model's device (an LRU bounded in bytes): a
store is one device copy and a hit another, with no serialisation on the step thread, which would
otherwise pay it inside time-to-first-token (tens of MB for an xLSTM state, a KV prefix more). Behind
it, a `StateStore` of safetensors bytes, written behind by a thread: `RedisStateStore` (TTL and a
byte cap shared by every replica, so all of them reuse each other's states) or `MemoryStateStore`
(an LRU in host memory). A store failure is a miss, never a failed request.
"""

from __future__ import annotations

import hashlib
import queue
import threading
import time
from array import array
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Protocol

import structlog

from archrouter.backends.base import Cache

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


class LocalStates:
    """The in-process tier: key -> a batch-of-one `Cache` on the model's device, LRU bounded in bytes."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, Cache] = OrderedDict()
        self._sizes: dict[str, int] = {}
        self._bytes = 0
        self.evictions = 0

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def get(self, key: str) -> Cache | None:
        cache = self._items.get(key)
        if cache is not None:
            self._items.move_to_end(key)
        return cache

    def put(self, key: str, cache: Cache) -> None:
        if key in self._items:
            self._bytes -= self._sizes.pop(key)
            del self._items[key]
        size = cache.nbytes()
        if size > self.max_bytes:
            return
        self._items[key], self._sizes[key] = cache, size
        self._bytes += size
        while self._bytes > self.max_bytes:
            old, _ = self._items.popitem(last=False)
            self._bytes -= self._sizes.pop(old)
            self.evictions += 1

    def size_bytes(self) -> int:
        return self._bytes


class StateCache:
    """Prefix lookups and stores for one backend, with the counters /metrics shows. Lookups, stores and
    the local tier belong to the engine's step thread; the writer thread only serialises and puts.

    `restore` turns a byte snapshot back into a cache on the model's device (`Cache.restore`).
    `store` takes a cache that is already the caller's own copy; `lookup` hands back a private copy.
    """

    def __init__(
        self,
        store: StateStore | None,
        namespace: str,
        *,
        block: int = 32,
        restore: Callable[[bytes], Cache] | None = None,
        local_bytes: int = 1 << 30,
        write_queue: int = 16,
    ):
        if store is not None and restore is None:
            raise ValueError("a byte store needs `restore` to turn its snapshots back into caches")
        self._store = store
        self._restore = restore
        self.local = LocalStates(local_bytes)
        self.namespace = namespace
        self.block = block
        self._root = hashlib.blake2b(namespace.encode(), digest_size=16).digest()
        self.counters = {
            "prefix_hits": 0, "prefix_misses": 0, "prefix_saved_tokens": 0, "prefix_stores": 0,
            "prefix_bytes_read": 0, "prefix_bytes_written": 0, "prefix_errors": 0, "prefix_writes_dropped": 0,
        }
        self._writes: queue.Queue[tuple[str, Cache] | None] | None = None
        if store is not None:
            self._writes = queue.Queue(maxsize=write_queue)
            self._writer = threading.Thread(target=self._write_behind, name="state-cache-writer", daemon=True)
            self._writer.start()

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

    def lookup(self, tokens: Sequence[int], max_len: int, *, private: bool = True) -> tuple[int, Cache] | None:
        """The longest cached prefix of `tokens` no longer than `max_len`: (its length, a cache of it).
        `private=False`: the cache may be the local tier's own (the caller copies it, e.g. into a slot)."""
        candidates = self.keys(tokens, max_len)
        local = max((i for i, (_, k) in enumerate(candidates) if k in self.local), default=-1)
        try:
            # the byte store is asked only for prefixes longer than the longest one held here
            longer = candidates[local + 1 :] if self._store is not None else []
            present = self._store.present([k for _, k in longer]) if longer else []
            for (n, key), ok in zip(reversed(longer), reversed(present), strict=True):
                if ok and (value := self._store.get(key)) is not None:
                    cache = self._restore(value)
                    self.counters["prefix_bytes_read"] += len(value)
                    self.local.put(key, cache.gather([0]))
                    return self._hit(n, cache)
        except Exception as exc:  # the cache is an optimisation: a broken store or snapshot is a miss
            self.counters["prefix_errors"] += 1
            log.warning("state_cache_lookup_failed", error=repr(exc))
        if local >= 0:
            n, key = candidates[local]
            cache = self.local.get(key)
            if cache is not None:
                return self._hit(n, cache.gather([0]) if private else cache)
        self.counters["prefix_misses"] += 1
        return None

    def _hit(self, n: int, cache: Cache) -> tuple[int, Cache]:
        self.counters["prefix_hits"] += 1
        self.counters["prefix_saved_tokens"] += n
        return n, cache

    def store(self, tokens: Sequence[int], n: int, cache: Cache) -> None:
        """Keep `cache`, the state reached after `tokens[:n]` (n a block boundary; the caller's copy)."""
        if n <= 0 or n % self.block:
            raise ValueError(f"snapshots sit at multiples of {self.block} tokens, got {n}")
        key = self.keys(tokens, n)[-1][1]
        self.local.put(key, cache)
        self.counters["prefix_stores"] += 1
        if self._writes is not None:
            try:
                self._writes.put_nowait((key, cache))
            except queue.Full:  # the byte store lags: this state stays local rather than stall a step
                self.counters["prefix_writes_dropped"] += 1

    def _write_behind(self) -> None:
        while (item := self._writes.get()) is not None:
            key, cache = item
            try:
                data = cache.snapshot(0)
                self._store.put(key, data)
                self.counters["prefix_bytes_written"] += len(data)
            except Exception as exc:
                self.counters["prefix_errors"] += 1
                log.warning("state_cache_store_failed", error=repr(exc))
            finally:
                self._writes.task_done()
        self._writes.task_done()

    def flush(self) -> None:
        """Wait until every state stored so far is in the byte store (tests, shutdown)."""
        if self._writes is not None:
            self._writes.join()

    def close(self) -> None:
        """Finish the pending writes, then stop the writer."""
        if self._writes is not None:
            self._writes.put(None)
            self._writer.join()
            self._writes = None

    def stats(self) -> dict[str, int]:
        store = self._store
        return {**self.counters,
                "prefix_cache_bytes": self.local.size_bytes() + (store.size_bytes() if store else 0),
                "prefix_evictions": self.local.evictions + getattr(store, "evictions", 0)}
