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

from policies.loader import PolicyError, load_policy, parse_policy
from router.metrics import Metrics
from router.pool import BackendPool

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
                policy = parse_policy(text, file=str(self.path))
                if self.policy is not None and policy.id == self.policy.id:
                    return True, policy.id
                await self._swap(policy, text)
            except OSError as exc:
                self.metrics.policy_reloads.labels(result="invalid").inc()
                log.error("policy_reload_rejected", file=str(self.path), errors=str(exc), kept=self.policy.id)
                return False, f"cannot read the policy file: {exc}"
            except PolicyError as exc:
                self.metrics.policy_reloads.labels(result="invalid").inc()
                log.error("policy_reload_rejected", file=str(self.path), errors=str(exc), kept=self.policy.id)
                return False, str(exc)
            except Exception as exc:  # backend failed to load: keep serving the old catalogue
                self.metrics.policy_reloads.labels(result="error").inc()
                log.exception("policy_reload_failed", file=str(self.path), kept=self.policy.id)
                return False, f"{type(exc).__name__}: {exc}"
            self.metrics.policy_reloads.labels(result="ok").inc()
            log.info("policy_reloaded", policy=self.policy.id)
        await self._announce(text, policy.id)
        return True, policy.id

    async def replace(self, text: str) -> tuple[bool, str]:
        """Validate `text` as the new policy; if valid, write it to the file and swap it in."""
        async with self._lock:
            try:
                policy = parse_policy(text, file=str(self.path))
                await self._swap(policy, text)
            except PolicyError as exc:
                self.metrics.policy_reloads.labels(result="invalid").inc()
                return False, str(exc)
            except Exception as exc:
                self.metrics.policy_reloads.labels(result="error").inc()
                return False, f"{type(exc).__name__}: {exc}"
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(text)
            tmp.replace(self.path)  # atomic: a reader sees the old file or the new one
            self.metrics.policy_reloads.labels(result="ok").inc()
            log.info("policy_replaced", policy=policy.id)
        await self._announce(text, policy.id)
        return True, policy.id

    async def adopt(self, text: str, origin: str = "peer") -> tuple[bool, str]:
        """Swap in a policy another replica accepted (validated again here: its backends must load)."""
        async with self._lock:
            if text == self.text:
                return True, self.policy.id
            try:
                policy = parse_policy(text, file=str(self.path))
                await self._swap(policy, text)
            except PolicyError as exc:
                self.metrics.policy_reloads.labels(result="invalid").inc()
                log.error("policy_adopt_rejected", origin=origin, errors=str(exc), kept=self.policy.id)
                return False, str(exc)
            except Exception as exc:
                self.metrics.policy_reloads.labels(result="error").inc()
                log.exception("policy_adopt_failed", origin=origin, kept=self.policy.id)
                return False, f"{type(exc).__name__}: {exc}"
            self.metrics.policy_reloads.labels(result="ok").inc()
            log.info("policy_adopted", policy=policy.id, origin=origin)
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
