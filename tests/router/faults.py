"""Real backends that misbehave on purpose, and a real Redis outage, for the fault tests.

`FaultyBackend` wraps a real `Generator` (a real model answers): it raises `BackendError` before the
first chunk on every Nth call, or after some chunks of the stream, or paces chunks like a slow device.
`redis_outage` stops the environment's Redis and always restarts it with the documented command.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import AsyncIterator, Iterator

import redis

from archrouter.backends.protocol import BackendError, GenerationChunk, GenerationRequest
from archrouter.router.embedded import embedded_factory

# the environment's documented command (CI runs tests one after another, so stopping Redis is safe there)
REDIS_START = ["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "-::1", "--port", "6379",
               "--save", "", "--appendonly", "no", "--dir", "/var/lib/redis", "--logfile", "/var/log/redis/ci.log"]


class FaultyBackend:
    def __init__(self, inner, *, fail_every: int = 0, fail_after_chunks: int | None = None,
                 chunk_delay_s: float = 0.0):
        self.inner, self.info = inner, inner.info
        self.fail_every, self.fail_after_chunks, self.chunk_delay_s = fail_every, fail_after_chunks, chunk_delay_s
        self.calls = 0

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        self.calls += 1
        if self.fail_every and self.calls % self.fail_every == 0:
            raise BackendError(f"{self.info.name}: injected failure on call {self.calls}")
        stream = self.inner.generate(request)
        try:
            n = 0
            async for chunk in stream:
                if self.fail_after_chunks is not None and n == self.fail_after_chunks:
                    raise BackendError(f"{self.info.name}: injected failure after {n} chunks")
                if n and self.chunk_delay_s:
                    await asyncio.sleep(self.chunk_delay_s)
                n += 1
                yield chunk
        finally:
            await stream.aclose()  # releases the real generator's lock

    async def ready(self) -> bool:
        return await self.inner.ready()

    async def close(self) -> None:
        await self.inner.close()


def faulty_factory(faults: dict[str, dict]):
    """A ClientFactory building real generators, wrapped by FaultyBackend where `faults` names them."""
    build = embedded_factory("cpu")
    made: dict[str, FaultyBackend] = {}

    def factory(name: str, spec):
        gen = build(name, spec)
        if name not in faults:
            return gen
        made[name] = FaultyBackend(gen, **faults[name])
        return made[name]

    factory.made = made
    return factory


def redis_ping(url: str = "redis://127.0.0.1:6379/0") -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5).ping())
    except (redis.RedisError, OSError):
        return False


@contextlib.contextmanager
def redis_outage(timeout_s: float = 10.0) -> Iterator[None]:
    """Stop the local Redis for the body of the `with`; restart it however the body ends."""
    subprocess.run(["redis-cli", "-p", "6379", "shutdown", "nosave"], check=False, capture_output=True, timeout=10)
    end = time.time() + timeout_s
    while redis_ping() and time.time() < end:
        time.sleep(0.05)
    try:
        yield
    finally:
        if not redis_ping():
            subprocess.run(REDIS_START, check=False, capture_output=True, timeout=10)
        end = time.time() + timeout_s
        while not redis_ping():
            if time.time() > end:
                raise RuntimeError("Redis did not come back after the outage")
            time.sleep(0.05)
