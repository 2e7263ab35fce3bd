"""Per-backend load for the Backends view, from the same numbers /metrics exports.

Each poll reads the router's Prometheus counters and histograms (requests, tokens, latency),
every engine's `stats()` (queue depth, running batch, state-cache hits) and the cooldowns, and
keeps a short history of those cumulative samples. Rates and latency percentiles are differences
between the newest sample and one a window earlier, the way Prometheus' `rate()` and
`histogram_quantile()` read the same series.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.metrics import MetricWrapperBase

RATE_WINDOW_S = 10.0  # requests/s and tokens/s: over the last 10 s
LATENCY_WINDOW_S = 60.0  # p50/p99: over the last minute
MIN_SPACING_S = 1.0  # several open dashboards share one sample per second
HISTORY = 180  # points kept per series (6 min at the page's 2 s poll)


@dataclass
class Sample:
    """Cumulative numbers for one backend at one instant."""

    requests: float = 0.0
    errors: float = 0.0
    prompt_tokens: float = 0.0
    completion_tokens: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)  # latency upper bound (s) -> cumulative count


def _samples(metric: MetricWrapperBase):
    for family in metric.collect():
        yield from family.samples


def read_metrics(metrics, backends: list[str]) -> dict[str, Sample]:
    """Sum the router's series per backend (over endpoints, rules and statuses)."""
    out = {b: Sample() for b in backends}
    for s in _samples(metrics.requests):
        if s.name.endswith("_total") and s.labels["backend"] in out:
            row = out[s.labels["backend"]]
            row.requests += s.value
            if s.labels["status"] != "200":
                row.errors += s.value
    for s in _samples(metrics.tokens):
        if s.name.endswith("_total") and s.labels["backend"] in out:
            row = out[s.labels["backend"]]
            if s.labels["kind"] == "prompt":
                row.prompt_tokens += s.value
            else:
                row.completion_tokens += s.value
    for s in _samples(metrics.latency):
        if s.name.endswith("_bucket") and s.labels["backend"] in out:
            le = float(s.labels["le"])
            b = out[s.labels["backend"]].buckets
            b[le] = b.get(le, 0.0) + s.value
    return out


def histogram_quantile(q: float, buckets: dict[float, float]) -> float | None:
    """Prometheus' histogram_quantile over cumulative bucket counts: linear inside the bucket.

    None without observations; a rank in the +Inf bucket answers the highest finite bound.
    """
    if not buckets:
        return None
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    prev_le, prev_count = 0.0, 0.0
    for le in bounds:
        count = buckets[le]
        if count >= rank:
            if math.isinf(le):
                return prev_le
            if count == prev_count:
                return le
            return prev_le + (le - prev_le) * (rank - prev_count) / (count - prev_count)
        prev_le, prev_count = le, count
    return prev_le


def _delta(new: dict[float, float], old: dict[float, float]) -> dict[float, float]:
    return {le: c - old.get(le, 0.0) for le, c in new.items()}


class LoadTracker:
    """Samples on demand (at most once a second) and answers the Backends view's JSON."""

    def __init__(self, router, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time):
        self.router = router
        self.clock, self.wall = clock, wall
        self.samples: deque[tuple[float, dict[str, Sample]]] = deque()
        self.series: dict[str, deque[dict[str, Any]]] = {}
        self.last: dict[str, Any] | None = None

    def _take(self) -> None:
        now = self.clock()
        backends = list(self.router.pool.clients)
        self.samples.append((now, read_metrics(self.router.metrics, backends)))
        keep = max(RATE_WINDOW_S, LATENCY_WINDOW_S) + 5
        while len(self.samples) > 2 and now - self.samples[1][0] > keep:
            self.samples.popleft()

    def _at_or_before(self, t: float) -> tuple[float, dict[str, Sample]]:
        """The newest sample taken at or before `t` (else the oldest kept)."""
        best = self.samples[0]
        for s in self.samples:
            if s[0] <= t:
                best = s
            else:
                break
        return best

    def snapshot(self) -> dict[str, Any]:
        now = self.clock()
        if self.last is not None and self.samples and now - self.samples[-1][0] < MIN_SPACING_S:
            return self.last
        self._take()
        t1, new = self.samples[-1]
        t_rate, old_rate = self._at_or_before(t1 - RATE_WINDOW_S)
        _, old_lat = self._at_or_before(t1 - LATENCY_WINDOW_S)
        dt = t1 - t_rate
        engines = self.router.engine_stats()
        cooling = self.router.cooldowns.state()
        wall = self.wall()
        rows = []
        for name, client in self.router.pool.clients.items():
            cur = new.get(name, Sample())
            prev, prev_lat = old_rate.get(name, Sample()), old_lat.get(name, Sample())
            window = _delta(cur.buckets, prev_lat.buckets)
            stats = engines.get(name)
            info = client.info
            row = {
                "name": name,
                "family": info.family,
                "context_length": info.context_length,
                "parameters": info.parameters,
                "trained": info.trained,
                "requests": cur.requests,
                "errors": cur.errors,
                "requests_per_s": (cur.requests - prev.requests) / dt if dt > 0 else None,
                "tokens_per_s": (cur.completion_tokens - prev.completion_tokens) / dt if dt > 0 else None,
                "prompt_tokens_per_s": (cur.prompt_tokens - prev.prompt_tokens) / dt if dt > 0 else None,
                "p50_ms": _ms(histogram_quantile(0.5, window)),
                "p99_ms": _ms(histogram_quantile(0.99, window)),
                "queue_depth": _stat(stats, "queue_depth", "waiting"),
                "running": _stat(stats, "running"),
                "cache_hit_rate": _hit_rate(stats),
                "cooldown_s": cooling.get(name),
                "engine": stats is not None,
            }
            rows.append(row)
            series = self.series.setdefault(name, deque(maxlen=HISTORY))
            series.append({"t": wall, **{k: row[k] for k in (
                "requests_per_s", "tokens_per_s", "p50_ms", "p99_ms", "queue_depth", "running")}})
        for gone in set(self.series) - set(self.router.pool.clients):
            del self.series[gone]
        self.last = {
            "time": wall,
            "policy": self.router.policy.id if self.router.policy else None,
            "rate_window_s": RATE_WINDOW_S,
            "latency_window_s": LATENCY_WINDOW_S,
            "backends": rows,
            "series": {name: list(points) for name, points in self.series.items()},
        }
        return self.last


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def _stat(stats: dict[str, float] | None, *keys: str) -> float | None:
    if stats is None:
        return None
    for k in keys:
        if k in stats:
            return stats[k]
    return None


def _hit_rate(stats: dict[str, float] | None) -> float | None:
    """State-cache hits over lookups since start; None without an engine or before the first lookup."""
    if stats is None:
        return None
    lookups = stats.get("prefix_hits", 0) + stats.get("prefix_misses", 0)
    return stats.get("prefix_hits", 0) / lookups if lookups else None
