"""The policy in force, swapped atomically when its file changes.

A new version is validated and its backends are made ready before the swap; anything that
fails leaves the old policy serving, and is logged and counted. Listeners hear of every policy
this holder accepted from its file or from `replace()` (router/policy_sync.py publishes them to
other replicas); `adopt()` takes one published elsewhere without telling the listeners again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from pathlib import Path

import structlog
import watchfiles

from archrouter.policies.loader import PolicyError, load_policy, parse_policy
from archrouter.router.metrics import Metrics
from archrouter.router.pool import BackendPool

log = structlog.get_logger("archrouter.policy")

# (policy text, policy id) of a version this replica accepted
PolicyListener = Callable[[str, str], Awaitable[None]]


class PolicyHolder:
    def __init__(self, path: str | Path, pool: BackendPool, metrics: Metrics):
        self.path = Path(path)
        self.pool = pool
        self.metrics = metrics
        self.policy = None
        self.text: str | None = None  # the text of the policy in force
        self.listeners: list[PolicyListener] = []
        self._lock = asyncio.Lock()
        self._watcher: asyncio.Task | None = None

    async def load_initial(self) -> None:
        text = self.path.read_text(encoding="utf-8")
        policy = load_policy(self.path)  # a broken file at start-up is fatal: nothing to fall back on
        await self._swap(policy, text)

    async def reload(self) -> tuple[bool, str]:
        """Re-read the file; returns (swapped or unchanged, policy id or the errors)."""
        async with self._lock:
            try:
                text = self.path.read_text(encoding="utf-8")
            except OSError as exc:
                self.metrics.policy_reloads.labels(result="invalid").inc()
                log.error("policy_reload_rejected", file=str(self.path), errors=str(exc), kept=self.policy.id)
                return False, f"cannot read the policy file: {exc}"
            if text == self.text:  # a save without changes, or our own write
                return True, self.policy.id
            ok, detail = await self._try_swap(text, "policy_reload", "policy_reloaded", file=str(self.path))
        if ok:
            await self._announce(text, detail)
        return ok, detail

    async def replace(self, text: str) -> tuple[bool, str]:
        """Validate `text` as the new policy; if valid, swap it in and write it to the file."""
        async with self._lock:
            ok, detail = await self._try_swap(text, "policy_replace", "policy_replaced", write_file=True)
        if ok:
            await self._announce(text, detail)
        return ok, detail

    async def adopt(self, text: str, origin: str = "peer") -> tuple[bool, str]:
        """Swap in a policy another replica accepted (validated again here: its backends must load)."""
        async with self._lock:
            if text == self.text:
                return True, self.policy.id
            return await self._try_swap(text, "policy_adopt", "policy_adopted", origin=origin)

    async def _try_swap(self, text: str, event: str, accepted: str, *, write_file: bool = False,
                        **ctx) -> tuple[bool, str]:
        """Parse, load backends and swap; on any failure keep the policy in force, count and log it."""
        try:
            policy = parse_policy(text, file=str(self.path))
            await self._swap(policy, text)
        except PolicyError as exc:
            self.metrics.policy_reloads.labels(result="invalid").inc()
            log.error(f"{event}_rejected", errors=str(exc), kept=self.policy.id, **ctx)
            return False, str(exc)
        except Exception as exc:  # a backend failed to load: keep serving the old catalogue
            self.metrics.policy_reloads.labels(result="error").inc()
            log.exception(f"{event}_failed", kept=self.policy.id, **ctx)
            return False, f"{type(exc).__name__}: {exc}"
        if write_file:
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(text)
            tmp.replace(self.path)  # atomic: a reader sees the old file or the new one
        self.metrics.policy_reloads.labels(result="ok").inc()
        log.info(accepted, policy=policy.id, **ctx)
        return True, policy.id

    async def _announce(self, text: str, policy_id: str) -> None:
        for listener in self.listeners:
            try:
                await listener(text, policy_id)
            except Exception:  # the swap here stands; other replicas catch up from the key later
                log.exception("policy_publish_failed", policy=policy_id)

    async def _swap(self, policy, text: str) -> None:
        clients = await self.pool.prepare(policy.backends)
        await self.pool.commit(policy.backends, clients)
        self.policy, self.text = policy, text  # one assignment each: requests see old or new, never a mix
        self.metrics.set_policy(policy.id)

    def start_watching(self) -> None:
        self._watcher = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        target = self.path.resolve()
        # watch the folder: editors replace files by rename, which a file watch would miss
        async for changes in watchfiles.awatch(target.parent, debounce=200, step=50):
            if any(Path(p).resolve() == target for _, p in changes):
                await self.reload()

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
