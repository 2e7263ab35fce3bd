"""Differentiable Mamba-1 scan and causal conv for training: dense [batch, T, dim] batches.

The serving Triton paths are forward-only and the references in `naive.py` loop over each packed
sequence; training batches are equal-length (right-padded), so here every op is vectorised over
batch x channels. On CUDA the scan is `train_triton.py` (one fused kernel launch over T for the
forward and one for the backward, softplus, D skip and gate included); elsewhere (and with
ARCHROUTER_NO_TRITON=1) it is the custom autograd function below: forward and backward are each
one fused multiply-add per time step (no autograd graph over T), saving only the decays and states.
Same math as `selective_scan_ref` / `causal_conv1d_ref` (fp32 scan, result in x's dtype).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from archrouter.kernels._dispatch import use_triton
from archrouter.kernels.selective_scan.naive import _dt, _finish


class _LinearScan(torch.autograd.Function):
    """h_t = a_t * h_{t-1} + b_t over the leading (time) dim, from h0; returns every h_t."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
        hs = torch.empty_like(b)
        h = h0
        for t in range(a.shape[0]):
            h = torch.addcmul(b[t], a[t], h, out=hs[t])
        ctx.save_for_backward(a, hs, h0)
        return hs

    @staticmethod
    def backward(ctx, ghs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        a, hs, h0 = ctx.saved_tensors
        T = a.shape[0]
        gb = torch.empty_like(hs)  # adjoint of h_t: g_t = dL/dh_t + a_{t+1} g_{t+1}
        g = torch.add(ghs[T - 1], 0, out=gb[T - 1])
        for t in range(T - 2, -1, -1):
            g = torch.addcmul(ghs[t], a[t + 1], g, out=gb[t])
        h_prev = torch.cat([h0[None], hs[:-1]], 0)
        return gb * h_prev, gb, a[0] * gb[0]


def selective_scan_dense(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    z: torch.Tensor | None,
    dt_bias: torch.Tensor | None,
    h0: torch.Tensor,
    *,
    dt_softplus: bool = True,
    impl: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """x, dt, z [batch, T, dim]; B, C [batch, T, N]; h0 [batch, dim, N]. Returns (y, final state fp32).

    impl: "triton" (the fused kernels), "torch", or None: Triton for CUDA tensors (`use_triton`)."""
    if impl is None:
        impl = "triton" if use_triton(x, h0) else "torch"
    # fp32 throughout, also under bf16 autocast: exp(dt A) over many steps needs it (as the reference)
    with torch.autocast(x.device.type, enabled=False):
        if impl == "triton":
            from archrouter.kernels.selective_scan.train_triton import selective_scan_triton

            return selective_scan_triton(x, dt, A, B, C, D, z, dt_bias, h0, dt_softplus=dt_softplus)
        if impl != "torch":
            raise ValueError(f"impl must be 'triton', 'torch' or None, got {impl!r}")
        d = _dt(dt, dt_bias, dt_softplus).transpose(0, 1)  # [T, batch, dim]
        xs = x.float().transpose(0, 1)
        dA = torch.exp(d[..., None] * A.float())  # [T, batch, dim, N]
        dBx = (d * xs)[..., None] * B.float().transpose(0, 1)[:, :, None, :]
        hs = _LinearScan.apply(dA, dBx.contiguous(), h0.float())
        y = torch.einsum("tbdn,tbn->tbd", hs, C.float().transpose(0, 1))
        y = _finish(y, xs, D, None if z is None else z.transpose(0, 1)).transpose(0, 1)
    return y.to(x.dtype), hs[-1]


def causal_conv1d_dense(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    past: torch.Tensor,
    *,
    activation: str | None = "silu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Depthwise causal conv of x [batch, T, dim] continuing from `past` [batch, dim, width-1].

    Returns (y [batch, T, dim], the new past: the last width-1 inputs)."""
    dim, width = weight.shape
    seq = torch.cat([past.to(x.dtype), x.transpose(1, 2)], 2)  # [batch, dim, width-1+T]
    y = F.conv1d(seq, weight[:, None, :].to(x.dtype), None if bias is None else bias.to(x.dtype), groups=dim)
    if activation == "silu":
        y = F.silu(y)
    return y.transpose(1, 2), seq[:, :, seq.shape[2] - (width - 1):]
