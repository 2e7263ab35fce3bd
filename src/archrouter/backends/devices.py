"""Which torch device an engine runs on: `auto` (the default) is CUDA when this process sees a GPU, else CPU."""

from __future__ import annotations

import torch

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str | None) -> str:
    """`auto`/None -> "cuda" when a GPU is visible to this process (under Ray: one the replica was given),
    else "cpu"; anything else (cpu, cuda, cuda:1) is a pin and passes through."""
    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def gpu_share(num_gpus: float, num_backends: int) -> float:
    """The GPU each backend replica asks Ray for when the device is `auto`: one GPU each when there are
    enough, else an equal fraction of what there is (the families share the devices as processes)."""
    if num_gpus <= 0 or num_backends <= 0:
        return 0.0
    if num_gpus >= num_backends:
        return 1.0
    return int(num_gpus) / num_backends if num_gpus >= 1 else num_gpus / num_backends
