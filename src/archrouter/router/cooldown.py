"""LiteLLM-style cooldowns: a backend that fails repeatedly is skipped for a while."""

from __future__ import annotations

import time
from collections import deque


class Cooldowns:
    def __init__(self, *, failures: int = 3, window_s: float = 60.0, cooldown_s: float = 30.0, clock=time.monotonic):
        self.failures, self.window_s, self.cooldown_s, self.clock = failures, window_s, cooldown_s, clock
        self._recent: dict[str, deque[float]] = {}
        self._until: dict[str, float] = {}

    def failed(self, backend: str) -> bool:
        """Record a failure; True when it put the backend in cooldown."""
        now = self.clock()
        q = self._recent.setdefault(backend, deque())
        q.append(now)
        while q and now - q[0] > self.window_s:
            q.popleft()
        if len(q) >= self.failures and not self.cooling(backend):
            self._until[backend] = now + self.cooldown_s
            q.clear()
            return True
        return False

    def succeeded(self, backend: str) -> None:
        self._recent.pop(backend, None)

    def cooling(self, backend: str) -> bool:
        until = self._until.get(backend)
        if until is None:
            return False
        if self.clock() >= until:
            del self._until[backend]
            return False
        return True

    def state(self) -> dict[str, float]:
        """Seconds of cooldown left, per backend in cooldown."""
        now = self.clock()
        return {b: round(u - now, 3) for b, u in self._until.items() if u > now}
