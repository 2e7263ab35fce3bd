"""One record per request: a structlog JSON line, and a capped Redis stream when configured.

The stream (`XADD ... MAXLEN ~ n`) is what `evals replay` reads back to re-decide traffic.
Redis being down never fails a request: records wait in a bounded buffer and a background task
retries them in order; records that overflow the buffer are dropped and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from typing import Any

import structlog
from redis import asyncio as aioredis
from redis.exceptions import RedisError

from archrouter.router.metrics import Metrics

log = structlog.get_logger("archrouter.decisions")


class DecisionLog:
    RETRY_S = 1.0

    def __init__(self, metrics: Metrics, redis_url: str | None, stream: str, maxlen: int, *, buffer: int = 10_000):
        self.metrics = metrics
        self.stream, self.maxlen = stream, maxlen
        self.redis = aioredis.from_url(redis_url, socket_timeout=1, socket_connect_timeout=1) if redis_url else None
        self.pending: deque[str] = deque()
        self.buffer = buffer
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.listeners: list[asyncio.Queue] = []  # live views (dashboard) subscribe here

    def start(self) -> None:
        if self.redis is not None:
            self._task = asyncio.create_task(self._flush_forever())

    async def record(self, entry: dict[str, Any]) -> None:
        log.info("decision", **entry)
        for q in self.listeners:
            with contextlib.suppress(asyncio.QueueFull):
                q.put_nowait(entry)
        if self.redis is None:
            return
        if len(self.pending) >= self.buffer:
            self.pending.popleft()
            self.metrics.decision_log_dropped.inc()
        self.pending.append(json.dumps(entry, default=str))
        self.metrics.decision_log_pending.set(len(self.pending))
        self._wake.set()

    async def _flush_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self.pending:
                try:
                    await self.redis.xadd(self.stream, {"record": self.pending[0]}, maxlen=self.maxlen,
                                          approximate=True)
                except (RedisError, OSError) as exc:
                    self.metrics.decision_log_failures.inc()
                    log.warning("decision_log_redis_failed", error=str(exc), pending=len(self.pending))
                    await asyncio.sleep(self.RETRY_S)
                    continue
                self.pending.popleft()
                self.metrics.decision_log_pending.set(len(self.pending))

    async def drain(self, timeout: float = 5.0) -> None:
        """Give buffered records a last chance to reach Redis (shutdown)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while self.pending and self._task is not None and not self._task.done():
                    await asyncio.sleep(0.05)

    async def close(self, drain_s: float = 5.0) -> None:
        await self.drain(drain_s)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.redis is not None:
            await self.redis.aclose()
