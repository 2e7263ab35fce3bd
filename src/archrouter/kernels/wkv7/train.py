"""Differentiable WKV-7 for training on equal-length [B, T, H, N] batches (`naive.py`'s math).

The serving Triton kernels are forward-only. On CUDA training takes `train_triton.py` (one fused
launch over T for the forward and one for the backward). Elsewhere (and with ARCHROUTER_NO_TRITON=1):
autograd over the reference's per-step loop would record a dozen ops per token, so this custom
autograd function runs the recurrence (forward) and its adjoint
(backward) as a few batched matmuls per step over batch x heads and does everything that does not
depend on the step order (outputs, gradients of r, k, v, w, a, b) as single batched ops after the loop.

    S_t = S_{t-1} diag(exp(w_t)) + (S_{t-1} a_t) b_t^T + v_t k_t^T,   y_t = S_t r_t
    adjoint G_t = dL/dS_t:  G_{t-1} = G_t diag(exp(w_t)) + (G_t b_t) a_t^T + dy_{t-1} r_{t-1}^T
"""

from __future__ import annotations

import torch

from archrouter.kernels._dispatch import use_triton


class _WKV7(torch.autograd.Function):
    @staticmethod
    def forward(ctx, r, w, k, v, a, b, s0):
        # time-major, heads folded into the batch: (T, B*H, N); state (B*H, N_v, N_k)
        T = r.shape[0]
        dec = torch.exp(w)
        bk = torch.stack([b, k], 2)  # (T, BH, 2, K)
        Ss = torch.empty(T + 1, *s0.shape, dtype=torch.float32, device=s0.device)
        Ss[0] = s0
        for t in range(T):
            S = Ss[t]
            u = torch.cat([torch.bmm(S, a[t, :, :, None]), v[t, :, :, None]], 2)  # (BH, V, 2)
            torch.baddbmm(S * dec[t, :, None, :], u, bk[t], out=Ss[t + 1])
        y = torch.einsum("tnvk,tnk->tnv", Ss[1:], r)
        ctx.save_for_backward(r, dec, k, v, a, b, Ss)
        return y, Ss[T]

    @staticmethod
    def backward(ctx, gy, gS_last):
        r, dec, k, v, a, b, Ss = ctx.saved_tensors
        T = r.shape[0]
        gy = torch.zeros_like(v) if gy is None else gy.float()
        G = torch.empty_like(Ss[1:])  # G[t] = dL/dS_t
        G[T - 1] = torch.bmm(gy[T - 1, :, :, None], r[T - 1, :, None, :])
        if gS_last is not None:
            G[T - 1] += gS_last
        ar = torch.stack([a[1:], r[:-1]], 2)  # (T-1, BH, 2, K): step t uses a_t and r_{t-1}
        for t in range(T - 1, 0, -1):
            u = torch.cat([torch.bmm(G[t], b[t, :, :, None]), gy[t - 1, :, :, None]], 2)  # (BH, V, 2)
            torch.baddbmm(G[t] * dec[t, :, None, :], u, ar[t - 1], out=G[t - 1])
        gs0 = G[0] * dec[0, :, None, :] + torch.bmm(torch.bmm(G[0], b[0, :, :, None]), a[0, :, None, :])
        S_prev = Ss[:-1]
        gr = torch.einsum("tnvk,tnv->tnk", Ss[1:], gy)
        gv = torch.einsum("tnvk,tnk->tnv", G, k)
        gk = torch.einsum("tnvk,tnv->tnk", G, v)
        gw = (G * S_prev).sum(2) * dec  # d/dw of exp(w)
        sa = torch.einsum("tnvk,tnk->tnv", S_prev, a)
        gb = torch.einsum("tnvk,tnv->tnk", G, sa)
        ga = torch.einsum("tnvk,tnv->tnk", S_prev, torch.einsum("tnvk,tnk->tnv", G, b))
        return gr, gw, gk, gv, ga, gb, gs0


def wkv7_dense(
    r: torch.Tensor,
    w: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    state: torch.Tensor,
    *,
    impl: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """r, w, k, v, a, b [B, T, H, N] (w the log decay); state [B, H, N_v, N_k] (read, not written).

    Returns y [B, T, H, N] in v's dtype and the final state (fp32). impl: "triton" (the fused
    kernels), "torch", or None: Triton for CUDA tensors (`use_triton`)."""
    B, T, H, N = r.shape
    if impl is None:
        impl = "triton" if use_triton(r, state) else "torch"
    if impl not in ("triton", "torch"):
        raise ValueError(f"impl must be 'triton', 'torch' or None, got {impl!r}")
    with torch.autocast(r.device.type, enabled=False):
        if impl == "triton":
            from archrouter.kernels.wkv7.train_triton import wkv7_triton

            y, s1 = wkv7_triton(r, w, k, v, a, b, state)
            return y.to(v.dtype), s1
        tm = [x.float().permute(1, 0, 2, 3).reshape(T, B * H, x.shape[-1]) for x in (r, w, k, v, a, b)]
        y, s1 = _WKV7.apply(*tm, state.float().reshape(B * H, *state.shape[2:]))
    return y.view(T, B, H, -1).transpose(0, 1).to(v.dtype), s1.view(state.shape)
