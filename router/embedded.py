"""Embedded mode: every backend's model loaded in this process, one generator each."""

from __future__ import annotations

import torch

from backends.generator import Generator
from router.pool import ClientFactory


def embedded_factory(device: str = "cpu") -> ClientFactory:
    def build(name: str, spec) -> Generator:
        dtype = getattr(torch, getattr(spec, "dtype", None) or "float32")
        return Generator.from_checkpoint(
            name, spec.family, spec.checkpoint, context_length=spec.context_length, device=device, dtype=dtype
        )

    return build
