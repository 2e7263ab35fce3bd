"""One record per request: a structlog JSON line, and a capped Redis stream when configured.

The stream (`XADD ... MAXLEN ~ n`) is what `evals replay` reads back to re-decide traffic.
"""

from __future__ import annotations

import json
from typing import Any

import structlog
from redis import asyncio as aioredis
from redis.exceptions import RedisError

from router.metrics import Metrics

log = structlog.get_logger("archrouter.decisions")


class DecisionLog:
    def __init__(self, metrics: Metrics, redis_url: str | None, stream: str, maxlen: int):
        self.metrics = metrics
        self.stream, self.maxlen = stream, maxlen
        self.redis = aioredis.from_url(redis_url) if redis_url else None

    async def record(self, entry: dict[str, Any]) -> None:
        log.info("decision", **entry)
        if self.redis is None:
            return
        try:
            await self.redis.xadd(
                self.stream, {"record": json.dumps(entry, default=str)}, maxlen=self.maxlen, approximate=True
            )
        except (RedisError, OSError) as exc:
            self.metrics.decision_log_failures.inc()
            log.warning("decision_log_redis_failed", error=str(exc))

    async def close(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()
