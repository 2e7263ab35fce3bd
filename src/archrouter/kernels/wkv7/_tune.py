"""Launch helpers shared by the WKV-7 kernels.

Launch configs are picked on the GPU itself: the first call for a class of shapes times each
candidate (triton.testing.do_bench) and keeps the fastest. Candidates that do not fit the
device (shared memory, registers) are skipped. CPU, the interpreter, CUDA-graph capture and
ARCHROUTER_WKV7_TUNE=0 take the first candidate, the heuristic default."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import torch

_CHOSEN: dict[tuple, Any] = {}
_IDENTITY: dict[tuple, torch.Tensor] = {}


def identity_slots(n: int, device: torch.device) -> torch.Tensor:
    """slots = 0..n-1, cached: decode calls this every step, and a kernel launch for arange would
    be a large part of a step's host time."""
    key = (n, str(device))
    if key in _IDENTITY:
        return _IDENTITY[key]
    slots = torch.arange(n, device=device, dtype=torch.int32)
    if not (device.type == "cuda" and torch.cuda.is_current_stream_capturing()):
        _IDENTITY[key] = slots  # (memory taken during a capture belongs to that graph: don't keep it)
    return slots


def bucket(n: int) -> int:
    """Shapes that launch about as many programs share a config."""
    return 1 << max(0, int(n) - 1).bit_length()


def chosen() -> dict[str, Any]:
    """What was picked so far (for benchmark reports)."""
    return {repr(k): v for k, v in _CHOSEN.items()}


def pick(
    key: tuple,
    candidates: Sequence[Any] | Callable[[], Sequence[Any]],
    trial: Callable[[Any], object],
    device: torch.device,
    state: torch.Tensor | None = None,
) -> Any:
    """The config for `key`. `candidates` (or a function making them) start with the default;
    `trial(cfg)` launches with one; `state`, a tensor the kernel updates in place, is put back
    as it was after timing."""
    if key in _CHOSEN:  # the per-step fast path: one dict lookup
        return _CHOSEN[key]
    if callable(candidates):
        candidates = candidates()
    if (len(candidates) == 1 or device.type != "cuda" or os.environ.get("ARCHROUTER_WKV7_TUNE") == "0"
            or os.environ.get("TRITON_INTERPRET") == "1" or torch.cuda.is_current_stream_capturing()):
        return candidates[0]
    from triton.testing import do_bench

    backup = state.clone() if state is not None else None
    best, best_ms = candidates[0], float("inf")
    for cfg in candidates:
        try:
            ms = do_bench(lambda cfg=cfg: trial(cfg), warmup=5, rep=20)
        except Exception:  # out of resources for this config on this device
            continue
        if ms < best_ms:
            best, best_ms = cfg, ms
    if state is not None:
        state.copy_(backup)
    _CHOSEN[key] = best
    return best
