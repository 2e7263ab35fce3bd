"""Continuous batching for every family, split like vLLM: scheduler, model runner, engine."""

from backends.engine.config import EngineConfig
from backends.engine.engine import Engine
from backends.engine.scheduler import QueueTimeout
from backends.engine.state_cache import MemoryStateStore, RedisStateStore, StateCache

__all__ = ["Engine", "EngineConfig", "MemoryStateStore", "QueueTimeout", "RedisStateStore", "StateCache"]
