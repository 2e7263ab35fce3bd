"""Live decisions: the decision log's records as server-sent events, newest last.

Memory (the default): each connection subscribes a queue to `DecisionLog.listeners`; a ring of
the last records gives a new page its backlog. With REDIS_URL the events come from the capped
decision stream instead (XREVRANGE for the backlog, then XREAD BLOCK), so one dashboard sees
every router replica writing to that stream; if Redis fails the connection falls back to memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

from redis import asyncio as aioredis
from redis.exceptions import RedisError

BACKLOG = 200
KEEPALIVE_S = 15.0


class RecentDecisions:
    """A ring of the last records with their arrival time; sits in `DecisionLog.listeners`.

    The log only calls `put_nowait(entry)` on its listeners, so a ring that never blocks fits there.
    """

    def __init__(self, size: int = BACKLOG, clock: Callable[[], float] = time.time):
        self.items: deque[tuple[float, dict[str, Any]]] = deque(maxlen=size)
        self.clock = clock

    def put_nowait(self, entry: dict[str, Any]) -> None:
        self.items.append((self.clock(), entry))


def row(entry: dict[str, Any], t: float) -> dict[str, Any]:
    """One table row from a decision record (router.app writes the record's fields)."""
    decision = entry.get("decision") or {}
    features = entry.get("features") or {}
    latency = entry.get("latency_ms")
    completion = entry.get("completion_tokens")
    return {
        "time": t,
        "request_id": entry.get("request_id"),
        "endpoint": entry.get("endpoint"),
        "model": entry.get("model"),
        "key": entry.get("key"),
        "policy": entry.get("policy"),
        "backend": entry.get("backend"),  # who answered; absent when every candidate failed
        "decided": decision.get("backend"),
        "rule": decision.get("rule"),
        "reason": decision.get("reason"),
        "fallbacks": decision.get("fallbacks") or [],
        "fallbacks_used": entry.get("fallbacks_used") or [],
        "fallback": entry.get("fallback"),  # {from, to, reason, expected_delta, ...} when one answered
        "cache": entry.get("cache"),  # "hit" / "miss" when the response cache was asked
        "task": features.get("task"),
        "prompt_tokens": entry.get("prompt_tokens", features.get("prompt_tokens")),
        "completion_tokens": completion,  # every choice's (n > 1, several prompts)
        "choices": entry.get("choices", 1),
        "n": entry.get("n", 1),
        "latency_ms": latency,
        "ttft_ms": entry.get("ttft_ms"),
        "tokens_per_s": completion / (latency / 1000) if latency and completion else None,
        "status": entry.get("status"),
        "error": entry.get("error"),
        "finish_reason": entry.get("finish_reason"),
    }


class RowFilter:
    """`?backend=` and `?rule=` on the stream (the page also filters what it already holds)."""

    def __init__(self, backend: str | None, rule: str | None):
        self.backend, self.rule = backend or None, rule or None

    def __call__(self, r: dict[str, Any]) -> bool:
        return ((self.backend is None or r["backend"] == self.backend)
                and (self.rule is None or r["rule"] == self.rule))


def event(kind: str, data: dict[str, Any]) -> str:
    return f"event: {kind}\ndata: {json.dumps(data, default=str)}\n\n"


async def memory_events(listeners: list, recent: RecentDecisions, keep: RowFilter) -> AsyncIterator[str]:
    queue: asyncio.Queue = asyncio.Queue(maxsize=1000)
    listeners.append(queue)  # subscribe before reading the ring: a record may show twice, never zero times
    try:
        yield event("source", {"source": "memory"})
        for t, entry in list(recent.items):
            if keep(r := row(entry, t)):
                yield event("decision", r)
        while True:
            try:
                entry = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
            except TimeoutError:
                yield ": keepalive\n\n"
                continue
            if keep(r := row(entry, time.time())):
                yield event("decision", r)
    finally:
        with contextlib.suppress(ValueError):
            listeners.remove(queue)


async def redis_events(url: str, stream: str, keep: RowFilter, fallback: Callable[[], AsyncIterator[str]]
                       ) -> AsyncIterator[str]:
    block_ms = int(KEEPALIVE_S * 1000)
    client = aioredis.from_url(url, socket_connect_timeout=2, socket_timeout=KEEPALIVE_S + 5)
    try:
        try:
            newest_first = await client.xrevrange(stream, count=BACKLOG)
        except (RedisError, OSError) as exc:
            yield event("notice", {"message": f"Redis stream unavailable ({exc}); showing this process only"})
            async for chunk in fallback():
                yield chunk
            return
        yield event("source", {"source": "redis", "stream": stream})
        # start from a real id (never "$"), so nothing added between two reads is skipped
        last = newest_first[0][0] if newest_first else b"0-0"
        for sid, fields in reversed(newest_first):
            if (r := _stream_row(sid, fields)) is not None and keep(r):
                yield event("decision", r)
        while True:
            try:
                got = await client.xread({stream: last}, block=block_ms, count=100)
            except (RedisError, OSError) as exc:
                yield event("notice", {"message": f"Redis stream lost ({exc}); showing this process only"})
                async for chunk in fallback():
                    yield chunk
                return
            if not got:
                yield ": keepalive\n\n"
                continue
            for _, entries in got:
                for sid, fields in entries:
                    last = sid
                    if (r := _stream_row(sid, fields)) is not None and keep(r):
                        yield event("decision", r)
    finally:
        await client.aclose()


def _stream_row(sid: bytes, fields: dict[bytes, bytes]) -> dict[str, Any] | None:
    try:
        entry = json.loads(fields[b"record"])
    except (KeyError, ValueError):
        return None
    ms = int(sid.split(b"-")[0])  # a stream id starts with the time Redis stored it, in ms
    return row(entry, ms / 1000)
