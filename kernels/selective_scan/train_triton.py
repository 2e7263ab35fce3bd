"""Triton training scan for Mamba-1: one launch over time for the forward and one for the backward.

One program owns (batch row, block of BLOCK_D channels) and walks t = 0..T-1 with its state
h [BLOCK_D, d_state] in registers (fp32). The decay exp(dt A), the input dt x B and the C
contraction are fused, so the [T, batch, dim, d_state] tensors of the torch path (`train.py`:
decays, inputs, states, adjoints) are never materialised except for one: the forward saves every
state h_t ([batch, T+1, dim, d_state] fp32, h_0 first) for the backward. Saving them costs one
write and one read of that tensor per layer; recomputing them would need the same traffic through
a scratch buffer or a parallel re-scan, so the simple choice is kept.

    forward:  h_t = exp(dt_t A) h_{t-1} + (dt_t x_t) B_t,   y_t = h_t C_t   (per channel d)
    backward: g_t = dL/dh_t = dy_t C_t^T + exp(dt_{t+1} A) g_{t+1}  (+ dL/dh_T at t = T-1)
              dC_t = sum_d dy_t h_t,  dB_t = sum_d g_t dt_t x_t,  dx_t = dt_t (g_t . B_t),
              ddt_t = sum_n g_t h_{t-1} exp(dt_t A) A + x_t (g_t . B_t),  dA = sum_t g_t h_{t-1} exp(dt_t A) dt_t

dB, dC (summed over channels) and dA (summed over the batch) are written per channel block / batch
row and summed afterwards, so there are no atomics and the result is deterministic.
softplus(dt + bias), the D skip and the z gate stay in torch (elementwise, autograd) around it.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

LOG2E = tl.constexpr(1.4426950408889634)
BLOCK_D = 32  # 1024 programs at the zoo shape (batch 64, dim 512): every SM gets several
NUM_WARPS = 2


@triton.jit
def _scan_fwd_kernel(
    dt_ptr, x_ptr, A_ptr, B_ptr, C_ptr, h0_ptr, y_ptr, hs_ptr, hT_ptr,
    T, dim, dstate,
    SAVE: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid_d = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    mask_d = offs_d < dim
    mask_n = offs_n < dstate
    mask_dn = mask_d[:, None] & mask_n[None, :]
    dn = offs_d[:, None] * dstate + offs_n[None, :]
    A2 = tl.load(A_ptr + dn, mask=mask_dn, other=0.0) * LOG2E
    h = tl.load(h0_ptr + b * dim * dstate + dn, mask=mask_dn, other=0.0)
    if SAVE:
        tl.store(hs_ptr + b * (T + 1) * dim * dstate + dn, h, mask=mask_dn)
    for t in range(T):
        row = b * T + t
        dt = tl.load(dt_ptr + row * dim + offs_d, mask=mask_d, other=0.0)
        x = tl.load(x_ptr + row * dim + offs_d, mask=mask_d, other=0.0)
        Bt = tl.load(B_ptr + row * dstate + offs_n, mask=mask_n, other=0.0)
        Ct = tl.load(C_ptr + row * dstate + offs_n, mask=mask_n, other=0.0)
        h = tl.exp2(dt[:, None] * A2) * h + (dt * x)[:, None] * Bt[None, :]
        tl.store(y_ptr + row * dim + offs_d, tl.sum(h * Ct[None, :], axis=1), mask=mask_d)
        if SAVE:
            tl.store(hs_ptr + (row + b + 1) * dim * dstate + dn, h, mask=mask_dn)
    tl.store(hT_ptr + b * dim * dstate + dn, h, mask=mask_dn)


@triton.jit
def _scan_bwd_kernel(
    dt_ptr, x_ptr, A_ptr, B_ptr, C_ptr, hs_ptr, dy_ptr, dhT_ptr,
    ddt_ptr, dx_ptr, dA_part_ptr, dB_part_ptr, dC_part_ptr, dh0_ptr,
    T, batch, dim, dstate,
    HAS_DHT: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid_d = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    mask_d = offs_d < dim
    mask_n = offs_n < dstate
    mask_dn = mask_d[:, None] & mask_n[None, :]
    dn = offs_d[:, None] * dstate + offs_n[None, :]
    A = tl.load(A_ptr + dn, mask=mask_dn, other=0.0)
    A2 = A * LOG2E
    if HAS_DHT:
        g = tl.load(dhT_ptr + b * dim * dstate + dn, mask=mask_dn, other=0.0)
    else:
        g = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    gA = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    hs_base = hs_ptr + b * (T + 1) * dim * dstate + dn  # hs[b, s] = h_{s-1}: h_0 first
    h = tl.load(hs_base + T * dim * dstate, mask=mask_dn, other=0.0)
    part_bt = pid_d.to(tl.int64) * batch * T  # row offset of this channel block's partial dB, dC
    for i in range(T):
        t = T - 1 - i
        row = b * T + t
        dt = tl.load(dt_ptr + row * dim + offs_d, mask=mask_d, other=0.0)
        x = tl.load(x_ptr + row * dim + offs_d, mask=mask_d, other=0.0)
        dy = tl.load(dy_ptr + row * dim + offs_d, mask=mask_d, other=0.0)
        Bt = tl.load(B_ptr + row * dstate + offs_n, mask=mask_n, other=0.0)
        Ct = tl.load(C_ptr + row * dstate + offs_n, mask=mask_n, other=0.0)
        h_prev = tl.load(hs_base + t * dim * dstate, mask=mask_dn, other=0.0)
        tl.store(dC_part_ptr + (part_bt + row) * dstate + offs_n, tl.sum(dy[:, None] * h, axis=0), mask=mask_n)
        g = g + dy[:, None] * Ct[None, :]  # now dL/dh_t in full
        dA = tl.exp2(dt[:, None] * A2)
        g_dA = g * h_prev * dA
        gA += g_dA * dt[:, None]
        gB = tl.sum(g * Bt[None, :], axis=1)
        tl.store(ddt_ptr + row * dim + offs_d, tl.sum(g_dA * A, axis=1) + gB * x, mask=mask_d)
        tl.store(dx_ptr + row * dim + offs_d, gB * dt, mask=mask_d)
        tl.store(dB_part_ptr + (part_bt + row) * dstate + offs_n, tl.sum(g * (dt * x)[:, None], axis=0),
                 mask=mask_n)
        g = g * dA  # the part of dL/dh_{t-1} that flows through h_t
        h = h_prev
    tl.store(dh0_ptr + b * dim * dstate + dn, g, mask=mask_dn)
    tl.store(dA_part_ptr + b * dim * dstate + dn, gA, mask=mask_dn)


def _grid(batch: int, dim: int) -> tuple[int, int]:
    return triton.cdiv(dim, BLOCK_D), batch


class SelectiveScanTriton(torch.autograd.Function):
    """(dt [batch, T, dim] after softplus, x [batch, T, dim], A [dim, N], B, C [batch, T, N], h0 [batch, dim, N]),
    all fp32 contiguous -> (y = C . h [batch, T, dim], h_T [batch, dim, N])."""

    @staticmethod
    def forward(ctx, dt, x, A, B, C, h0):
        batch, T, dim = x.shape
        dstate = A.shape[1]
        y = torch.empty_like(x)
        hT = torch.empty_like(h0)
        save = any(ctx.needs_input_grad)
        ctx.set_materialize_grads(False)  # an unused output (often the final state) gets no zeros tensor
        hs = torch.empty(batch, T + 1, dim, dstate, dtype=torch.float32, device=x.device) if save else hT
        _scan_fwd_kernel[_grid(batch, dim)](
            dt, x, A, B, C, h0, y, hs, hT, T, dim, dstate,
            SAVE=save, BLOCK_D=BLOCK_D, BLOCK_N=triton.next_power_of_2(dstate), num_warps=NUM_WARPS,
        )  # fmt: skip
        if save:
            ctx.save_for_backward(dt, x, A, B, C, hs)
        return y, hT

    @staticmethod
    def backward(ctx, dy, dhT):
        dt, x, A, B, C, hs = ctx.saved_tensors
        batch, T, dim = x.shape
        dstate = A.shape[1]
        dy = torch.zeros_like(x) if dy is None else dy.float().contiguous()
        n_blocks = triton.cdiv(dim, BLOCK_D)
        ddt, dx = torch.empty_like(dt), torch.empty_like(x)
        dA_part = torch.empty(batch, dim, dstate, dtype=torch.float32, device=x.device)
        dB_part = torch.empty(n_blocks, batch, T, dstate, dtype=torch.float32, device=x.device)
        dC_part = torch.empty_like(dB_part)
        dh0 = torch.empty(batch, dim, dstate, dtype=torch.float32, device=x.device)
        _scan_bwd_kernel[_grid(batch, dim)](
            dt, x, A, B, C, hs, dy, dy if dhT is None else dhT.float().contiguous(),
            ddt, dx, dA_part, dB_part, dC_part, dh0, T, batch, dim, dstate,
            HAS_DHT=dhT is not None, BLOCK_D=BLOCK_D, BLOCK_N=triton.next_power_of_2(dstate), num_warps=NUM_WARPS,
        )  # fmt: skip
        return ddt, dx, dA_part.sum(0), dB_part.sum(0), dC_part.sum(0), dh0


def selective_scan_triton(
    dt: torch.Tensor, x: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, h0: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Differentiable fused scan; see `SelectiveScanTriton`. Inputs are cast to contiguous fp32."""
    args = [t.float().contiguous() for t in (dt, x, A, B, C, h0)]
    return SelectiveScanTriton.apply(*args)
