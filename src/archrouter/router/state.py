"""What one router process holds: settings, policy, backends, keys, limits, logs, metrics."""

from __future__ import annotations

import time

from archrouter.router import response_cache, schemas
from archrouter.router.auth import KeyStore, Principal, forbidden_backend
from archrouter.router.cooldown import Cooldowns
from archrouter.router.decision_log import DecisionLog
from archrouter.router.engine_metrics import EngineCollector
from archrouter.router.errors import APIError
from archrouter.router.metrics import Metrics
from archrouter.router.policy_holder import PolicyHolder
from archrouter.router.pool import BackendPool, ClientFactory
from archrouter.router.ratelimit import RateLimiter
from archrouter.router.settings import Settings


class Router:
    def __init__(self, settings: Settings, factory: ClientFactory):
        self.settings = settings
        self.metrics = Metrics()
        self.pool = BackendPool(factory)
        self.metrics.registry.register(EngineCollector(self.engine_stats))
        self.policies = PolicyHolder(settings.policy, self.pool, self.metrics)
        self.decisions = DecisionLog(
            self.metrics, settings.redis_url, settings.decision_stream, settings.decision_stream_maxlen,
            buffer=settings.decision_log_buffer,
        )
        self.keys = KeyStore.from_config(settings.keys_file, settings.api_keys, settings.admin_key)
        self.limiter = RateLimiter(settings.redis_url, default_rpm=settings.rpm, default_tpm=settings.tpm,
                                   retry_redis_s=settings.ratelimit_redis_retry_s,
                                   on_mode=lambda mode: self.metrics.ratelimit_mode.set(mode == "redis"))
        self.response_cache = response_cache.from_settings(settings, self.metrics.registry)
        self.cooldowns = Cooldowns(failures=settings.cooldown_failures, window_s=settings.cooldown_window_s,
                                   cooldown_s=settings.cooldown_s)

    @property
    def policy(self):
        return self.policies.policy

    def check_limits(self, body) -> None:
        s = self.settings
        if isinstance(body, schemas.ChatCompletionRequest) and len(body.messages) > s.max_messages:
            raise APIError(400, f"at most {s.max_messages} messages per request (got {len(body.messages)})",
                           param="messages", code="too_many_messages")
        if body.limit() > s.max_tokens_cap:
            param = "max_tokens" if getattr(body, "max_completion_tokens", None) is None else "max_completion_tokens"
            raise APIError(400, f"{param} is {body.limit()}; this server allows at most {s.max_tokens_cap}",
                           param=param, code="max_tokens_too_large")

    def decide(self, body: schemas.ChatCompletionRequest | schemas.CompletionRequest, principal: Principal):
        policy = self.policy
        if body.model != "auto" and body.model not in policy.backends:
            raise APIError(
                404,
                f"The model '{body.model}' does not exist; use 'auto' or one of: {', '.join(policy.backends)}",
                param="model",
                code="model_not_found",
            )
        if body.model != "auto" and not principal.may_use(body.model):
            raise forbidden_backend(principal, body.model)
        t0 = time.perf_counter()
        messages = body.message_dicts() if isinstance(body, schemas.ChatCompletionRequest) else None
        # a batch of prompts routes as its longest one (the one that needs the most context)
        prompt = max(body.prompt_list(), key=len) if isinstance(body, schemas.CompletionRequest) else None
        features = policy.features(
            messages=messages, prompt=prompt, max_tokens=body.limit(), metadata=body.metadata or {},
            session_id=body.user, queue_depth=self.queue_depths(),
        )
        decision = policy.decide(features, pinned=None if body.model == "auto" else body.model)
        elapsed = time.perf_counter() - t0
        self.metrics.decision.observe(elapsed)
        if not any(principal.may_use(b) for b in [decision.backend, *decision.fallbacks]):
            raise forbidden_backend(principal, decision.backend)
        return features, decision, elapsed

    def engine_stats(self) -> dict[str, dict[str, float]]:
        """Each in-process engine's stats() (backends without one, such as Ray handles, are left out)."""
        return {name: stats() for name, c in self.pool.clients.items() if callable(stats := getattr(c, "stats", None))}

    def queue_depths(self) -> dict[str, int]:
        return {name: int(s.get("queue_depth", 0)) for name, s in self.engine_stats().items()}

    def refresh_gauges(self) -> None:
        cooling = self.cooldowns.state()
        for name in self.pool.clients:
            self.metrics.cooldown.labels(name).set(1 if name in cooling else 0)
