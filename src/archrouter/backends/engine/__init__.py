"""Continuous batching for every family, split like vLLM: scheduler, model runner, engine."""

from archrouter.backends.engine.config import EngineConfig
from archrouter.backends.engine.engine import Engine
from archrouter.backends.engine.scheduler import QueueTimeout
from archrouter.backends.engine.state_cache import MemoryStateStore, RedisStateStore, StateCache

__all__ = ["Engine", "EngineConfig", "MemoryStateStore", "QueueTimeout", "RedisStateStore", "StateCache"]
