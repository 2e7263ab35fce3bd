"""Prometheus metrics, one registry per app (so tests can run several apps in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
DECISION_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "archrouter_requests", "Completion requests answered", ["endpoint", "backend", "rule", "status"],
            registry=r,
        )
        # kind: prompt, completion, or cached (prompt tokens restored from a prefix/state cache, not prefilled)
        self.tokens = Counter("archrouter_tokens", "Tokens processed", ["backend", "kind"], registry=r)
        self.latency = Histogram(
            "archrouter_request_latency_seconds", "End-to-end completion latency", ["backend", "rule"],
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.ttft = Histogram(
            "archrouter_time_to_first_token_seconds", "Time to first token", ["backend"],
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.decision = Histogram(
            "archrouter_decision_latency_seconds", "Features + classifier + rules", buckets=DECISION_BUCKETS,
            registry=r,
        )
        self.policy_reloads = Counter(
            "archrouter_policy_reloads", "Policy reload attempts", ["result"], registry=r
        )
        self.policy_info = Gauge("archrouter_policy_info", "The policy in force (value 1)", ["policy"], registry=r)
        self.fallbacks = Counter(
            "archrouter_fallbacks", "Requests served by a fallback", ["from_backend", "to_backend"], registry=r
        )
        self.errors = Counter("archrouter_errors", "Error responses", ["status", "code"], registry=r)
        self.decision_log_failures = Counter(
            "archrouter_decision_log_failures", "Failed writes of decision records to Redis (retried)", registry=r
        )
        self.decision_log_dropped = Counter(
            "archrouter_decision_log_dropped", "Decision records dropped: buffer full while Redis was down",
            registry=r,
        )
        self.decision_log_pending = Gauge(
            "archrouter_decision_log_pending", "Decision records waiting for Redis", registry=r
        )
        self.rate_limited = Counter("archrouter_rate_limited", "Requests refused by the rate limit", ["key"],
                                    registry=r)
        self.ratelimit_mode = Gauge(
            "archrouter_ratelimit_redis", "1 while rate limits are shared through Redis, 0 while local", registry=r
        )
        self.cooldown = Gauge("archrouter_backend_cooldown", "1 while a backend is in cooldown", ["backend"],
                              registry=r)

    def set_policy(self, policy_id: str) -> None:
        self.policy_info.clear()
        self.policy_info.labels(policy=policy_id).set(1)
