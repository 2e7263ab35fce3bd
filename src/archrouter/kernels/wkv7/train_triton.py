"""Triton training kernels for WKV-7: one launch over time for the forward and one for the backward.

One program owns (batch x head, block of BLOCK_V value rows) and walks the sequence with its rows of
the state S [BLOCK_V, K] in registers (fp32). Rows of S evolve independently, and so do rows of the
adjoint G = dL/dS, so blocks of rows need no communication:

    forward:  sa = S_{t-1} a_t,  S_t = S_{t-1} diag(exp(w_t)) + sa b_t^T + v_t k_t^T,  y_t = S_t r_t
    backward: G_t = (what flows back from S_{t+1}) + dy_t r_t^T, then
              dv_t = G_t k_t,  dr_t = S_t^T dy_t,  dk_t = G_t^T v_t,  db_t = G_t^T sa,
              dw_t = exp(w_t) * sum_v G_t * S_{t-1},  da_t = S_{t-1}^T (G_t b_t),
              G_{t-1} <- G_t diag(exp(w_t)) + (G_t b_t) a_t^T

The forward saves every state (S_0 first: [B*H, T+1, V, K] fp32; 1 GiB per layer at the zoo's
batch 64 x 256 tokens x 4 heads of 64); the backward reads each once. The sums over value rows
(dr, dk, db, dw, da) are written per row block and summed afterwards: no atomics, deterministic.
Inputs are [B, T, H, K] (v: [B, T, H, V]) fp32 contiguous, as the model makes them; no transposes.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# 4 row blocks per head of 64: 1024 programs at the zoo shape (batch 64, 4 heads). With 2 warps the
# compiled sm_90 kernels take 128 (forward) and 219 (backward) registers a thread, no spills: the
# forward's programs all fit on an H100 at once, the backward's in two waves (4 warps: 2 and 3).
# benchmarks/bench_training_step.py --tiles times the alternatives.
BLOCK_V = 16
NUM_WARPS = 2


@triton.jit
def _wkv7_fwd_kernel(
    r_ptr, w_ptr, k_ptr, v_ptr, a_ptr, b_ptr, s0_ptr, y_ptr, ss_ptr, sT_ptr,
    T, H, K, V,
    SAVE: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid_v = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    bb = bh // H
    hh = bh % H
    offs_v = pid_v * BLOCK_V + tl.arange(0, BLOCK_V)
    offs_k = tl.arange(0, BLOCK_K)
    mask_v = offs_v < V
    mask_k = offs_k < K
    mask_vk = mask_v[:, None] & mask_k[None, :]
    vk = offs_v[:, None] * K + offs_k[None, :]
    S = tl.load(s0_ptr + bh * V * K + vk, mask=mask_vk, other=0.0)
    ss_base = ss_ptr + bh * (T + 1) * V * K + vk
    if SAVE:
        tl.store(ss_base, S, mask=mask_vk)
    for t in range(T):
        tok = (bb * T + t) * H + hh
        r = tl.load(r_ptr + tok * K + offs_k, mask=mask_k, other=0.0)
        w = tl.load(w_ptr + tok * K + offs_k, mask=mask_k, other=0.0)
        k = tl.load(k_ptr + tok * K + offs_k, mask=mask_k, other=0.0)
        a = tl.load(a_ptr + tok * K + offs_k, mask=mask_k, other=0.0)
        b = tl.load(b_ptr + tok * K + offs_k, mask=mask_k, other=0.0)
        v = tl.load(v_ptr + tok * V + offs_v, mask=mask_v, other=0.0)
        sa = tl.sum(S * a[None, :], axis=1)
        S = S * tl.exp(w)[None, :] + sa[:, None] * b[None, :] + v[:, None] * k[None, :]
        tl.store(y_ptr + tok * V + offs_v, tl.sum(S * r[None, :], axis=1), mask=mask_v)
        if SAVE:
            tl.store(ss_base + (t + 1) * V * K, S, mask=mask_vk)
    tl.store(sT_ptr + bh * V * K + vk, S, mask=mask_vk)


@triton.jit
def _wkv7_bwd_kernel(
    r_ptr, w_ptr, k_ptr, v_ptr, a_ptr, b_ptr, ss_ptr, dy_ptr, dsT_ptr,
    dr_ptr, dw_ptr, dk_ptr, dv_ptr, da_ptr, db_ptr, ds0_ptr,
    T, H, K, V, part_stride,
    HAS_DST: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid_v = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    bb = bh // H
    hh = bh % H
    offs_v = pid_v * BLOCK_V + tl.arange(0, BLOCK_V)
    offs_k = tl.arange(0, BLOCK_K)
    mask_v = offs_v < V
    mask_k = offs_k < K
    mask_vk = mask_v[:, None] & mask_k[None, :]
    vk = offs_v[:, None] * K + offs_k[None, :]
    if HAS_DST:
        G = tl.load(dsT_ptr + bh * V * K + vk, mask=mask_vk, other=0.0)
    else:
        G = tl.zeros([BLOCK_V, BLOCK_K], dtype=tl.float32)
    ss_base = ss_ptr + bh * (T + 1) * V * K + vk  # ss[bh, s] = S_{s-1}: S_0 first
    S = tl.load(ss_base + T * V * K, mask=mask_vk, other=0.0)
    part = pid_v.to(tl.int64) * part_stride  # this row block's slice of the partial sums over v
    for i in range(T):
        t = T - 1 - i
        tok = (bb * T + t) * H + hh
        r = tl.load(r_ptr + tok * K + offs_k, mask=mask_k, other=0.0)
        w = tl.load(w_ptr + tok * K + offs_k, mask=mask_k, other=0.0)
        k = tl.load(k_ptr + tok * K + offs_k, mask=mask_k, other=0.0)
        a = tl.load(a_ptr + tok * K + offs_k, mask=mask_k, other=0.0)
        b = tl.load(b_ptr + tok * K + offs_k, mask=mask_k, other=0.0)
        v = tl.load(v_ptr + tok * V + offs_v, mask=mask_v, other=0.0)
        dy = tl.load(dy_ptr + tok * V + offs_v, mask=mask_v, other=0.0)
        S_prev = tl.load(ss_base + t * V * K, mask=mask_vk, other=0.0)
        G = G + dy[:, None] * r[None, :]
        dec = tl.exp(w)
        sa = tl.sum(S_prev * a[None, :], axis=1)
        gsa = tl.sum(G * b[None, :], axis=1)
        tl.store(dv_ptr + tok * V + offs_v, tl.sum(G * k[None, :], axis=1), mask=mask_v)
        out_k = part + tok * K + offs_k
        tl.store(dr_ptr + out_k, tl.sum(S * dy[:, None], axis=0), mask=mask_k)
        tl.store(dk_ptr + out_k, tl.sum(G * v[:, None], axis=0), mask=mask_k)
        tl.store(db_ptr + out_k, tl.sum(G * sa[:, None], axis=0), mask=mask_k)
        tl.store(dw_ptr + out_k, tl.sum(G * S_prev, axis=0) * dec, mask=mask_k)
        tl.store(da_ptr + out_k, tl.sum(S_prev * gsa[:, None], axis=0), mask=mask_k)
        G = G * dec[None, :] + gsa[:, None] * a[None, :]
        S = S_prev
    tl.store(ds0_ptr + bh * V * K + vk, G, mask=mask_vk)


class WKV7Triton(torch.autograd.Function):
    """(r, w, k, a, b [B, T, H, K], v [B, T, H, V], s0 [B, H, V, K]), fp32 contiguous -> (y [B, T, H, V], S_T)."""

    @staticmethod
    def forward(ctx, r, w, k, v, a, b, s0):
        B, T, H, K = r.shape
        V = v.shape[-1]
        y = torch.empty_like(v)
        sT = torch.empty_like(s0)
        save = any(ctx.needs_input_grad)
        ctx.set_materialize_grads(False)  # an unused output (often the final state) gets no zeros tensor
        ss = torch.empty(B * H, T + 1, V, K, dtype=torch.float32, device=r.device) if save else sT
        _wkv7_fwd_kernel[(triton.cdiv(V, BLOCK_V), B * H)](
            r, w, k, v, a, b, s0, y, ss, sT, T, H, K, V,
            SAVE=save, BLOCK_V=BLOCK_V, BLOCK_K=triton.next_power_of_2(K), num_warps=NUM_WARPS,
        )  # fmt: skip
        if save:
            ctx.save_for_backward(r, w, k, v, a, b, ss)
        return y, sT

    @staticmethod
    def backward(ctx, dy, dsT):
        r, w, k, v, a, b, ss = ctx.saved_tensors
        B, T, H, K = r.shape
        V = v.shape[-1]
        n_blocks = triton.cdiv(V, BLOCK_V)
        dy = torch.zeros_like(v) if dy is None else dy.float().contiguous()
        parts = [torch.empty(n_blocks, *r.shape, dtype=torch.float32, device=r.device) for _ in range(5)]
        dv = torch.empty_like(v)
        ds0 = torch.empty(B, H, V, K, dtype=torch.float32, device=r.device)
        dr, dw, dk, da, db = parts
        _wkv7_bwd_kernel[(n_blocks, B * H)](
            r, w, k, v, a, b, ss, dy, dy if dsT is None else dsT.float().contiguous(),
            dr, dw, dk, dv, da, db, ds0, T, H, K, V, r.numel(),
            HAS_DST=dsT is not None, BLOCK_V=BLOCK_V, BLOCK_K=triton.next_power_of_2(K), num_warps=NUM_WARPS,
        )  # fmt: skip
        dr, dw, dk, da, db = (p[0] if n_blocks == 1 else p.sum(0) for p in parts)
        return dr, dw, dk, dv, da, db, ds0


def wkv7_triton(
    r: torch.Tensor, w: torch.Tensor, k: torch.Tensor, v: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
    s0: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Differentiable fused WKV-7; see `WKV7Triton`. Inputs are cast to contiguous fp32."""
    return WKV7Triton.apply(*(t.float().contiguous() for t in (r, w, k, v, a, b, s0)))
