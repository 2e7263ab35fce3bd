"""mLSTM (xLSTM's matrix-memory cell): chunkwise prefill and one-step decode.

`mlstm_chunkwise` / `mlstm_step` take the Triton path for CUDA tensors and the PyTorch reference
otherwise; both read and write each sequence's state through `slots` into a preallocated pool.
Layout and math: `kernels.mlstm.naive`.
"""

from __future__ import annotations

import torch

from archrouter.kernels._dispatch import use_triton
from archrouter.kernels.mlstm.naive import mlstm_chunkwise_naive, mlstm_recurrent_naive, mlstm_step_naive

__all__ = [
    "mlstm_chunkwise",
    "mlstm_step",
    "mlstm_chunkwise_naive",
    "mlstm_recurrent_naive",
    "mlstm_step_naive",
]


def mlstm_chunkwise(
    q, k, v, i, f, C, n, m, slots, cu_seqlens, *, scale=None, eps=1e-6, dense: tuple[int, int] | None = None,
    layout: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Packed prefill; see `kernels.mlstm.chunk.mlstm_chunkwise_triton`.

    `dense=(batch, length)` says every sequence has `length` tokens, so the Triton path can lay
    out its chunks on the device without reading `cu_seqlens` back to the host.
    """
    if use_triton(q, C):
        from archrouter.kernels.mlstm.chunk import dense_chunk_layout, mlstm_chunkwise_triton

        if layout is None and dense is not None:
            layout = dense_chunk_layout(*dense, 64, q.device)
        return mlstm_chunkwise_triton(
            q, k, v, i, f, C, n, m, slots, cu_seqlens, scale=scale, eps=eps, layout=layout
        )
    return mlstm_chunkwise_naive(q, k, v, i, f, C, n, m, slots, cu_seqlens, scale=scale, eps=eps)


def mlstm_step(q, k, v, i, f, C, n, m, slots, *, scale=None, eps=1e-6) -> torch.Tensor:
    """One decode step for a batch; see `kernels.mlstm.step.mlstm_step_triton`."""
    if use_triton(q, C):
        from archrouter.kernels.mlstm.step import mlstm_step_triton

        return mlstm_step_triton(q, k, v, i, f, C, n, m, slots, scale=scale, eps=eps)
    return mlstm_step_naive(q, k, v, i, f, C, n, m, slots, scale=scale, eps=eps)
