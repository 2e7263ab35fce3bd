"""When to take a Triton path."""

from __future__ import annotations

import functools
import os

import torch


@functools.cache
def triton_installed() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def use_triton(*tensors: torch.Tensor) -> bool:
    """Triton for CUDA tensors; the reference on CPU (ARCHROUTER_NO_TRITON=1 forces it). Under the
    interpreter, ARCHROUTER_TRITON_ON_CPU=1 sends CPU tensors through the Triton kernels too, so a whole
    model's Triton path (as the engine calls it) can be checked on a machine without a GPU."""
    if os.environ.get("ARCHROUTER_NO_TRITON") == "1" or not triton_installed():
        return False
    if interpreting() and os.environ.get("ARCHROUTER_TRITON_ON_CPU") == "1":
        return True
    return all(t.is_cuda for t in tensors)
