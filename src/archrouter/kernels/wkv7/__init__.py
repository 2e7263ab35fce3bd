"""WKV-7, the RWKV-7 state update (generalized delta rule), over packed sequences and a state pool.

`wkv7(r, w, k, v, a, b, state_pool, slots, cu_seqlens)`: inputs [B, T, H, N] (equal lengths) or
[1, T_total, H, N] with cumulative offsets `cu_seqlens`; `w` is the log decay; sequence i reads and
writes `state_pool[slots[i]]` (fp32 [P, H, N_v, N_k]) in place; a negative slot is padding and
touches no state. Returns y shaped like v.

CUDA tensors take Triton: the fused recurrent kernel when every sequence is one token (decode),
the chunked kernel otherwise. CPU tensors and inputs that need gradients (the Triton kernels are
forward-only) take the plain-PyTorch reference; training itself uses `train.py` (dense batches,
Triton forward + backward kernels on CUDA).
"""

from __future__ import annotations

import torch

from archrouter.kernels._dispatch import use_triton
from archrouter.kernels.wkv7.naive import naive_wkv7

__all__ = ["wkv7", "naive_wkv7", "chunk_wkv7", "fused_recurrent_wkv7"]


def wkv7(
    r: torch.Tensor,
    w: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    state_pool: torch.Tensor,
    slots: torch.Tensor | None = None,
    cu_seqlens: torch.Tensor | None = None,
    *,
    chunk_size: int | None = None,
    lengths: list[int] | None = None,
) -> torch.Tensor:
    # the Triton kernels are forward-only: training (inputs needing gradients) takes the reference
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (r, w, k, v, a, b))
    if needs_grad or not use_triton(r, state_pool):
        return naive_wkv7(r, w, k, v, a, b, state_pool, slots, cu_seqlens)
    decode = r.shape[1] == 1 if cu_seqlens is None else r.shape[1] == cu_seqlens.numel() - 1
    # short prompts gain nothing from chunking; the recurrent kernel handles any length
    if decode or (cu_seqlens is None and r.shape[1] < 16):
        from archrouter.kernels.wkv7.fused_recurrent import fused_recurrent_wkv7

        return fused_recurrent_wkv7(r, w, k, v, a, b, state_pool, slots, cu_seqlens)
    from archrouter.kernels.wkv7.chunk import chunk_wkv7

    # `lengths` (packed sequences' lengths, known to the caller's host): the chunk layout needs no device read
    return chunk_wkv7(r, w, k, v, a, b, state_pool, slots, cu_seqlens, chunk_size=chunk_size, lengths=lengths)


def __getattr__(name: str):
    # the Triton modules import triton; load them only when a Triton path is asked for
    if name == "chunk_wkv7":
        from archrouter.kernels.wkv7.chunk import chunk_wkv7

        return chunk_wkv7
    if name == "fused_recurrent_wkv7":
        from archrouter.kernels.wkv7.fused_recurrent import fused_recurrent_wkv7

        return fused_recurrent_wkv7
    raise AttributeError(name)
