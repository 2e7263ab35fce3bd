"""Recurrent-state affinity across Ray Serve replicas, as a Serve request router (Serve's own extension
point, `RequestRouterConfig(request_router_class=...)`), not a router of our own.

A conversation's next turn should land on the replica whose device tier holds the state its previous
turn left (the engine snapshots a recurrent state, or attention KV, at the end of each prompt): there
it is restored from device memory, elsewhere from Redis (the shared tier) or recomputed. The
conversation is named by the caller's session (the request's `user`) when given, else by its opening:
the messages before the first assistant turn (a completion prompt: its first 512 characters), which
every later turn repeats. After a request is routed, the
(conversation -> replica) entry is written to this handle's table and to Redis (`<prefix>:table:<key>`,
with a TTL), so every ingress replica's handle agrees. The owner is preferred when it is alive and has
room; otherwise, and for a new conversation, Serve's usual choice among all replicas applies, and the
state comes from the shared tier. `enabled=False` keeps the bookkeeping but never steers: the same
counters then measure how often chance alone lands a turn on the owner (the benchmark's "off").

Counters in Redis (`<prefix>:stats`): `turns` (requests of a conversation seen before), `owner_routed`
(those sent to the replica that served its previous turn), `owner_busy` (owner alive but full),
`owner_gone` (owner no longer a replica), `new` (first turns).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from typing import Any

from ray.serve.request_router import PendingRequest, ReplicaID, RequestRouter, RunningReplica

PREFIX = "archrouter:affinity"


def conversation_key(request: Any) -> str | None:
    """A stable name for the conversation a GenerationRequest belongs to, or None when it has none:
    the caller's session (`user`) when given, else the conversation's opening."""
    session = getattr(request, "session", None)
    if session:
        return hashlib.sha256(f"session:{session}".encode()).hexdigest()[:32]
    messages = getattr(request, "messages", None)
    if messages:
        head = []
        for m in messages:
            role = m.get("role") if isinstance(m, dict) else getattr(m, "role", None)
            if role == "assistant":
                break
            head.append([role, m.get("content") if isinstance(m, dict) else getattr(m, "content", None)])
        blob = json.dumps(head, sort_keys=True, default=str)
    else:
        prompt = getattr(request, "prompt", None)
        if not isinstance(prompt, str) or not prompt:
            return None
        blob = prompt[:512]
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


class StateAffinityRouter(RequestRouter):
    def initialize_state(self, redis_url: str | None = None, prefix: str = PREFIX, ttl_s: float = 3600.0,
                         enabled: bool = True, **kwargs: Any) -> None:
        self.redis_url, self.prefix, self.ttl_s, self.enabled = redis_url, prefix, ttl_s, enabled
        self.owner: dict[str, str] = {}  # conversation -> replica unique id (this handle's view)
        self._redis = None
        self._tasks: set[asyncio.Task] = set()

    def _client(self):
        if self._redis is None and self.redis_url:
            from redis import asyncio as aioredis

            self._redis = aioredis.from_url(self.redis_url, socket_timeout=0.5, socket_connect_timeout=0.5)
        return self._redis

    async def _lookup(self, key: str) -> str | None:
        """The owner: Redis first (several ingress replicas route one conversation), else this handle's table."""
        r = self._client()
        if r is not None:
            try:
                raw = await r.get(f"{self.prefix}:table:{key}")
                if raw:
                    return raw.decode()
            except Exception:  # Redis down: this handle's own view
                pass
        return self.owner.get(key)

    def _count(self, field: str) -> None:
        r = self._client()
        if r is not None:
            self._spawn(r.hincrby(f"{self.prefix}:stats", field, 1))

    def _spawn(self, coro) -> None:
        async def quiet():
            with contextlib.suppress(Exception):  # bookkeeping never fails a request
                await coro

        task = asyncio.get_running_loop().create_task(quiet())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def choose_replicas(self, candidate_replicas: list[RunningReplica],
                              pending_request: PendingRequest | None = None) -> list[list[RunningReplica]]:
        key = self._key(pending_request)
        if key is None:
            return [candidate_replicas]
        owner = await self._lookup(key)
        pending_request._archrouter_affinity = (key, owner)  # read back in on_request_routed
        if owner is None or not self.enabled:
            return [candidate_replicas]
        mine = [r for r in candidate_replicas if r.replica_id.unique_id == owner]
        if mine and self.select_available_replicas(mine):
            return [mine, [r for r in candidate_replicas if r not in mine]]
        return [candidate_replicas]  # owner gone or full: any replica, the state comes from Redis

    def on_request_routed(self, pending_request: PendingRequest, replica_id: ReplicaID, result: Any) -> None:
        key, owner = getattr(pending_request, "_archrouter_affinity", (None, None))
        if key is None:
            return
        chosen = replica_id.unique_id
        if owner is None:
            self._count("new")
        else:
            self._count("turns")
            if chosen == owner:
                self._count("owner_routed")
            elif owner in {r.replica_id.unique_id for r in self._replicas_list}:
                self._count("owner_busy")
            else:
                self._count("owner_gone")
        self.owner[key] = chosen  # the state of this turn's prompt now lives on `chosen`
        r = self._client()
        if r is not None:
            self._spawn(r.set(f"{self.prefix}:table:{key}", chosen, ex=max(1, int(self.ttl_s))))

    def on_replica_actor_died(self, replica_id: ReplicaID) -> None:
        super().on_replica_actor_died(replica_id)
        gone = replica_id.unique_id
        for k in [k for k, v in self.owner.items() if v == gone]:
            del self.owner[k]

    @staticmethod
    def _key(pending_request: PendingRequest | None) -> str | None:
        if pending_request is None or not pending_request.args:
            return None
        return conversation_key(pending_request.args[0])
