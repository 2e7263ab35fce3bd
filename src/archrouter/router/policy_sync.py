"""One policy version across router replicas, through Redis.

A replica that accepts a policy (its file changed, or `PUT /admin/policy`) has validated it and made
its backends ready; only then does it publish the text: the key holds the current version, the
channel tells every replica. Each replica swaps atomically (PolicyHolder.adopt). A replica that
starts, or reconnects after losing Redis, reads the key, so it serves the version in force and not
whatever its own copy of the file says. An invalid policy is never published, so it reaches no
replica. Without REDIS_URL each replica watches the policy file instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import socket

import redis.asyncio as aioredis
import structlog

from archrouter.router.policy_holder import PolicyHolder

log = structlog.get_logger("archrouter.policy_sync")

CHANNEL = "archrouter:policy"
KEY = "archrouter:policy:current"


def payload(text: str, policy_id: str, origin: str) -> str:
    return json.dumps({"id": policy_id, "sha256": hashlib.sha256(text.encode()).hexdigest(), "origin": origin,
                       "text": text})


class PolicySync:
    def __init__(self, redis_url: str, holder: PolicyHolder, *, channel: str = CHANNEL, key: str = KEY,
                 retry_s: float = 1.0):
        self.redis_url, self.holder, self.channel, self.key, self.retry_s = redis_url, holder, channel, key, retry_s
        self.origin = f"{socket.gethostname()}:{os.getpid()}"
        self.redis: aioredis.Redis | None = None
        self._task: asyncio.Task | None = None
        self._subscribed = asyncio.Event()

    async def start(self, *, wait_s: float = 5.0) -> None:
        """Subscribe, catch up with the key, then publish what this holder accepts from now on."""
        self.redis = aioredis.from_url(self.redis_url, decode_responses=True, socket_connect_timeout=2)
        self.holder.listeners.append(self.publish)
        self._task = asyncio.create_task(self._run())
        with contextlib.suppress(TimeoutError):  # Redis down: serve the file's policy, keep retrying
            await asyncio.wait_for(self._subscribed.wait(), wait_s)

    async def publish(self, text: str, policy_id: str) -> None:
        data = payload(text, policy_id, self.origin)
        # one transaction: the key and the message order agree even when two replicas publish at once
        async with self.redis.pipeline(transaction=True) as pipe:
            await pipe.set(self.key, data).publish(self.channel, data).execute()
        log.info("policy_published", policy=policy_id, channel=self.channel)

    async def _run(self) -> None:
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                current = await self.redis.get(self.key)
                if current is None:  # the first replica to start makes its policy the current one
                    created = await self.redis.set(self.key, payload(self.holder.text, self.holder.policy.id,
                                                                     self.origin), nx=True)
                    current = None if created else await self.redis.get(self.key)
                if current is not None:
                    await self._apply(current)
                self._subscribed.set()
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        await self._apply(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # connection lost: retry, then catch up from the key
                self._subscribed.clear()
                log.warning("policy_sync_disconnected", error=repr(exc), retry_s=self.retry_s)
                await asyncio.sleep(self.retry_s)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    async def _apply(self, raw: str) -> None:
        try:
            data = json.loads(raw)
            text = data["text"]
        except (ValueError, KeyError, TypeError):
            log.error("policy_sync_bad_message", channel=self.channel)
            return
        if text != self.holder.text:
            await self.holder.adopt(text, origin=data.get("origin", "peer"))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.redis is not None:
            await self.redis.aclose()


def publish_now(redis_url: str, text: str, policy_id: str, *, origin: str = "deploy",
                channel: str = CHANNEL, key: str = KEY) -> None:
    """Make `text` the current policy from outside a router (a deploy): set the key and tell every replica.

    Redis down: logged, and replicas start from their own file (they catch up when Redis is back)."""
    import redis

    client = redis.Redis.from_url(redis_url, socket_connect_timeout=2)
    try:
        data = payload(text, policy_id, origin)
        pipe = client.pipeline(transaction=True)
        pipe.set(key, data).publish(channel, data).execute()
        log.info("policy_published", policy=policy_id, channel=channel, origin=origin)
    except redis.RedisError as exc:
        log.warning("policy_publish_failed", policy=policy_id, error=repr(exc))
    finally:
        client.close()
