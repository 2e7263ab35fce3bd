"""The backends the router can call, kept in step with the policy's catalogue."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from archrouter.backends.protocol import BackendClient

log = structlog.get_logger("archrouter.pool")

# (name, spec) -> client; embedded mode loads the model in process, Ray mode returns a handle client
ClientFactory = Callable[[str, object], BackendClient]


def spec_key(spec: object) -> tuple:
    return tuple(getattr(spec, f, None) for f in ("family", "checkpoint", "context_length", "dtype"))


class BackendPool:
    def __init__(self, factory: ClientFactory):
        self.factory = factory
        self.clients: dict[str, BackendClient] = {}
        self._keys: dict[str, tuple] = {}

    async def prepare(self, catalogue: dict[str, object]) -> dict[str, BackendClient]:
        """Clients for a catalogue: existing ones reused, new or changed ones built (may raise)."""
        out: dict[str, BackendClient] = {}
        for name, spec in catalogue.items():
            if name in self.clients and self._keys[name] == spec_key(spec):
                out[name] = self.clients[name]
            else:
                log.info("backend_loading", backend=name, family=getattr(spec, "family", None))
                out[name] = await asyncio.to_thread(self.factory, name, spec)
        return out

    async def commit(self, catalogue: dict[str, object], clients: dict[str, BackendClient]) -> None:
        """Make `clients` the live set; close the ones no longer used."""
        old = self.clients
        self.clients = clients
        self._keys = {n: spec_key(s) for n, s in catalogue.items()}
        for name, client in old.items():
            if clients.get(name) is not client:
                await client.close()

    def get(self, name: str) -> BackendClient | None:
        return self.clients.get(name)

    async def close(self) -> None:
        await self.commit({}, {})
