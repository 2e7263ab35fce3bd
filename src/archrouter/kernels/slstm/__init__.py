"""sLSTM (xLSTM's scalar-memory cell with recurrent connections): fused scan and decode step.

`slstm_scan` / `slstm_step` take the Triton path for CUDA tensors and the PyTorch reference
otherwise; states live in a preallocated pool indexed by `slots`. Layout and math: `kernels.slstm.naive`.
Training (differentiable, dense batches): `kernels.slstm.train.slstm_scan_dense`, which takes the
Triton forward + backward pair in `kernels.slstm.fused_train` for CUDA tensors.
"""

from __future__ import annotations

import torch

from archrouter.kernels._dispatch import use_triton
from archrouter.kernels.slstm.naive import slstm_cell_naive, slstm_scan_naive, slstm_step_naive

__all__ = ["slstm_scan", "slstm_step", "slstm_scan_naive", "slstm_step_naive", "slstm_cell_naive"]


def slstm_scan(x, R, b, h, c, n, m, slots, cu_seqlens) -> torch.Tensor:
    """Packed sequences through the recurrence; see `kernels.slstm.fused_recurrent`."""
    if use_triton(x, h):
        from archrouter.kernels.slstm.fused_recurrent import slstm_scan_triton

        return slstm_scan_triton(x, R, b, h, c, n, m, slots, cu_seqlens)
    return slstm_scan_naive(x, R, b, h, c, n, m, slots, cu_seqlens)


def slstm_step(x, R, b, h, c, n, m, slots) -> torch.Tensor:
    """One token for each of N sequences."""
    if use_triton(x, h):
        from archrouter.kernels.slstm.fused_recurrent import slstm_step_triton

        return slstm_step_triton(x, R, b, h, c, n, m, slots)
    return slstm_step_naive(x, R, b, h, c, n, m, slots)
