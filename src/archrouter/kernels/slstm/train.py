"""Differentiable sLSTM for training: `slstm_scan_naive`'s recurrence on dense [batch, T] batches.

`slstm_scan_dense` takes `kernels.slstm.fused_train` (a Triton forward and backward, one launch
each) for CUDA tensors and `slstm_scan_dense_torch` otherwise, or when ARCHROUTER_NO_TRITON=1 (as
the other training paths); ARCHROUTER_SLSTM_TRAIN=torch|triton forces one (triton on CPU runs in the
interpreter).

The torch path: one loop over T vectorised over batch x heads (the recurrent matmul is one batched
matmul per step, the input projections and bias are added once up front), differentiated by
autograd. The cell is the reference's own `slstm_cell_naive`; fp32 inside, also under bf16 autocast.
"""

from __future__ import annotations

import os

import torch

from archrouter.kernels._dispatch import triton_installed
from archrouter.kernels.slstm.naive import slstm_cell_naive


def slstm_train_backend(x: torch.Tensor) -> str:
    """'triton' or 'torch' for a training call on x (see the module docstring)."""
    forced = os.environ.get("ARCHROUTER_SLSTM_TRAIN", "")
    if forced in ("torch", "triton"):
        return forced
    if forced:
        raise ValueError(f"ARCHROUTER_SLSTM_TRAIN={forced!r}: expected 'torch' or 'triton'")
    no_triton = os.environ.get("ARCHROUTER_NO_TRITON") == "1"
    return "triton" if x.is_cuda and triton_installed() and not no_triton else "torch"


def slstm_scan_dense(
    x: torch.Tensor,
    R: torch.Tensor,
    b: torch.Tensor,
    h: torch.Tensor,
    c: torch.Tensor,
    n: torch.Tensor,
    m: torch.Tensor,
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """x (B, T, 4, NH, D) gate pre-activations; R (NH, 4, D_out, D_in); b (4, NH, D); initial state
    h, c, n, m (B, NH, D). Returns y (B, T, NH, D) in x's dtype and the final (h, c, n, m) in fp32."""
    if slstm_train_backend(x) == "triton":
        from archrouter.kernels.slstm.fused_train import slstm_scan_dense_triton

        return slstm_scan_dense_triton(x, R, b, h, c, n, m)
    return slstm_scan_dense_torch(x, R, b, h, c, n, m)


def slstm_scan_dense_torch(
    x: torch.Tensor,
    R: torch.Tensor,
    b: torch.Tensor,
    h: torch.Tensor,
    c: torch.Tensor,
    n: torch.Tensor,
    m: torch.Tensor,
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """x (B, T, 4, NH, D) gate pre-activations; R (NH, 4, D_out, D_in); b (4, NH, D); initial state
    h, c, n, m (B, NH, D). Returns y (B, T, NH, D) in x's dtype and the final (h, c, n, m) in fp32."""
    B, T, _, NH, D = x.shape
    ys = []
    with torch.autocast(x.device.type, enabled=False):
        # raw_t = x_t + b + R h_{t-1}: per head, h (NH, B, D_in) @ R^T (NH, D_in, 4*D_out)
        xb = (x.float() + b.float()).permute(1, 3, 0, 2, 4).reshape(T, NH, B, 4 * D)
        Rt = R.float().reshape(NH, 4 * D, D).transpose(1, 2)
        # copies: callers write the final state back into these pools, which autograd must not see
        hs, cs, ns, ms = (s.float().transpose(0, 1).clone() for s in (h, c, n, m))  # (NH, B, D)
        for t in range(T):
            raw = torch.baddbmm(xb[t], hs, Rt).view(NH, B, 4, D).transpose(1, 2)  # (NH, 4, B, D)
            hs, cs, ns, ms = slstm_cell_naive(raw, cs, ns, ms)
            ys.append(hs)
    y = torch.stack(ys, 0).permute(2, 0, 1, 3).to(x.dtype)  # (T, NH, B, D) -> (B, T, NH, D)
    return y, tuple(s.transpose(0, 1) for s in (hs, cs, ns, ms))
