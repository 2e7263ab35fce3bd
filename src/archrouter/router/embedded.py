"""Embedded mode: every backend's model loaded in this process, one continuous-batching engine each."""

from __future__ import annotations

import torch

from archrouter.backends.devices import resolve_device
from archrouter.backends.engine import Engine, EngineConfig
from archrouter.router.pool import ClientFactory


def embedded_factory(device: str = "auto", *, redis_url: str | None = None) -> ClientFactory:
    """Engine settings come from ARCHROUTER_ENGINE_* variables; `redis_url` shares recurrent states.
    `device`: "auto" is CUDA when this process sees a GPU, else the CPU; "cpu" / "cuda[:n]" pin it."""
    device = resolve_device(device)

    def build(name: str, spec) -> Engine:
        dtype = getattr(torch, getattr(spec, "dtype", None) or "float32")
        config = EngineConfig(redis_url=redis_url) if redis_url else EngineConfig()
        return Engine.from_checkpoint(
            name, spec.family, spec.checkpoint, context_length=spec.context_length, device=device, dtype=dtype,
            config=config,
        )

    return build
