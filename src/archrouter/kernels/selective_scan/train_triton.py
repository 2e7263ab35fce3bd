"""Triton training scan for Mamba-1: one launch over time for the forward and one for the backward.

One program owns (batch row, block of BLOCK_D channels) and walks t = 0..T-1 with its state
h [BLOCK_D, d_state] in registers (fp32). softplus(dt + bias), the decay exp(dt A), the input
dt x B, the C contraction, the D skip and the silu(z) gate are all fused, so none of the
[T, batch, dim, d_state] tensors of the torch path (`train.py`: decays, inputs, states, adjoints)
is materialised except one: the forward saves every state h_t ([batch, T+1, dim, d_state] fp32,
h_0 first) for the backward (about 0.5 GiB per layer at the zoo's batch 64 x 256 tokens x 512
channels x 16). Recomputing them instead would need the same traffic through a scratch buffer or
a parallel re-scan per chunk; storing them keeps both kernels a plain loop.

    forward:  dt_t = softplus(dt_t + bias),  h_t = exp(dt_t A) h_{t-1} + (dt_t x_t) B_t,
              y_t = (h_t C_t + D x_t) silu(z_t)   (per channel d; h_t C_t sums over the state)
    backward: with s_t = h_t C_t and dy'_t = dy_t silu(z_t) (the gradient of s_t):
              g_t = dL/dh_t = dy'_t C_t^T + exp(dt_{t+1} A) g_{t+1}  (+ dL/dh_T at t = T-1)
              dC_t = sum_d dy'_t h_t,  dB_t = sum_d g_t dt_t x_t,  dx_t = dt_t (g_t . B_t) + D dy'_t,
              d dt_t = [sum_n g_t h_{t-1} exp(dt_t A) A + x_t (g_t . B_t)] softplus'(dt_t + bias),
              dA = sum_t g_t h_{t-1} exp(dt_t A) dt_t,  dz_t = dy_t (s_t + D x_t) silu'(z_t)

Sums over channels (dB, dC) are written per channel block and sums over the batch (dA, dD, dbias)
per batch row, then reduced by torch: no atomics, deterministic. Inputs may be bf16 (autocast) and
row-strided views (z, B, C are slices of projections): they are read in place and upcast in-kernel.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

LOG2E = tl.constexpr(1.4426950408889634)
# 1024 programs at the zoo shape (batch 64, dim 512). With 2 warps the compiled sm_90 kernels take
# 117 (forward) and 237 (backward) registers a thread, no spills: the forward's programs all fit on
# an H100 at once, the backward's in two waves. benchmarks/bench_training_step.py --tiles times others.
BLOCK_D = 32
NUM_WARPS = 2


@triton.jit
def _softplus(u):
    # torch's softplus with threshold 20
    return tl.where(u <= 20.0, tl.log(1.0 + tl.exp(u)), u)


@triton.jit
def _scan_fwd_kernel(
    x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, h0_ptr, y_ptr, hs_ptr, hT_ptr,
    sx, sdt, sb, sc, sz,
    T, dim, dstate,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
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
    A2 = tl.load(A_ptr + dn, mask=mask_dn, other=0.0).to(tl.float32) * LOG2E
    if HAS_D:
        Dv = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    h = tl.load(h0_ptr + b * dim * dstate + dn, mask=mask_dn, other=0.0)
    if SAVE:
        tl.store(hs_ptr + b * (T + 1) * dim * dstate + dn, h, mask=mask_dn)
    for t in range(T):
        row = b * T + t
        x = tl.load(x_ptr + row * sx + offs_d, mask=mask_d, other=0.0).to(tl.float32)
        dt = tl.load(dt_ptr + row * sdt + offs_d, mask=mask_d, other=0.0).to(tl.float32)
        if HAS_BIAS:
            dt = dt + bias
        if SOFTPLUS:
            dt = _softplus(dt)
        dt = tl.where(mask_d, dt, 0.0)
        Bt = tl.load(B_ptr + row * sb + offs_n, mask=mask_n, other=0.0).to(tl.float32)
        Ct = tl.load(C_ptr + row * sc + offs_n, mask=mask_n, other=0.0).to(tl.float32)
        h = tl.exp2(dt[:, None] * A2) * h + (dt * x)[:, None] * Bt[None, :]
        y = tl.sum(h * Ct[None, :], axis=1)
        if HAS_D:
            y += x * Dv
        if HAS_Z:
            z = tl.load(z_ptr + row * sz + offs_d, mask=mask_d, other=0.0).to(tl.float32)
            y = y * z * tl.sigmoid(z)
        tl.store(y_ptr + row * dim + offs_d, y.to(y_ptr.dtype.element_ty), mask=mask_d)
        if SAVE:
            tl.store(hs_ptr + (row + b + 1) * dim * dstate + dn, h, mask=mask_dn)
    tl.store(hT_ptr + b * dim * dstate + dn, h, mask=mask_dn)


@triton.jit
def _scan_bwd_kernel(
    x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, hs_ptr, dy_ptr, dhT_ptr,
    dx_ptr, ddt_ptr, dz_ptr, dA_part_ptr, dB_part_ptr, dC_part_ptr, dD_part_ptr, dbias_part_ptr, dh0_ptr,
    sx, sdt, sb, sc, sz,
    T, batch, dim, dstate,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
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
    A = tl.load(A_ptr + dn, mask=mask_dn, other=0.0).to(tl.float32)
    A2 = A * LOG2E
    if HAS_D:
        Dv = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    if HAS_DHT:
        g = tl.load(dhT_ptr + b * dim * dstate + dn, mask=mask_dn, other=0.0)
    else:
        g = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    gA = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    gD = tl.zeros([BLOCK_D], dtype=tl.float32)
    gbias = tl.zeros([BLOCK_D], dtype=tl.float32)
    hs_base = hs_ptr + b * (T + 1) * dim * dstate + dn  # hs[b, s] = h_{s-1}: h_0 first
    h = tl.load(hs_base + T * dim * dstate, mask=mask_dn, other=0.0)
    part_bt = pid_d.to(tl.int64) * batch * T  # row offset of this channel block's partial dB, dC
    for i in range(T):
        t = T - 1 - i
        row = b * T + t
        x = tl.load(x_ptr + row * sx + offs_d, mask=mask_d, other=0.0).to(tl.float32)
        u = tl.load(dt_ptr + row * sdt + offs_d, mask=mask_d, other=0.0).to(tl.float32)
        if HAS_BIAS:
            u = u + bias
        dt = tl.where(mask_d, _softplus(u) if SOFTPLUS else u, 0.0)
        dy = tl.load(dy_ptr + row * dim + offs_d, mask=mask_d, other=0.0).to(tl.float32)
        Bt = tl.load(B_ptr + row * sb + offs_n, mask=mask_n, other=0.0).to(tl.float32)
        Ct = tl.load(C_ptr + row * sc + offs_n, mask=mask_n, other=0.0).to(tl.float32)
        h_prev = tl.load(hs_base + t * dim * dstate, mask=mask_dn, other=0.0)
        if HAS_Z:
            z = tl.load(z_ptr + row * sz + offs_d, mask=mask_d, other=0.0).to(tl.float32)
            sig = tl.sigmoid(z)
            pre = tl.sum(h * Ct[None, :], axis=1)
            if HAS_D:
                pre += x * Dv
            dz = dy * pre * sig * (1.0 + z * (1.0 - sig))
            tl.store(dz_ptr + row * dim + offs_d, dz.to(dz_ptr.dtype.element_ty), mask=mask_d)
            dy = dy * z * sig  # now the gradient of the pre-gate output
        dx = tl.zeros([BLOCK_D], dtype=tl.float32)
        if HAS_D:
            gD += dy * x
            dx = dy * Dv
        tl.store(dC_part_ptr + (part_bt + row) * dstate + offs_n, tl.sum(dy[:, None] * h, axis=0), mask=mask_n)
        g = g + dy[:, None] * Ct[None, :]  # now dL/dh_t in full
        dA = tl.exp2(dt[:, None] * A2)
        g_dA = g * h_prev * dA
        gA += g_dA * dt[:, None]
        gB = tl.sum(g * Bt[None, :], axis=1)
        ddt = tl.sum(g_dA * A, axis=1) + gB * x
        if SOFTPLUS:
            ddt = ddt * tl.where(u <= 20.0, tl.sigmoid(u), 1.0)
        gbias += ddt
        tl.store(ddt_ptr + row * dim + offs_d, ddt.to(ddt_ptr.dtype.element_ty), mask=mask_d)
        tl.store(dx_ptr + row * dim + offs_d, (dx + gB * dt).to(dx_ptr.dtype.element_ty), mask=mask_d)
        tl.store(dB_part_ptr + (part_bt + row) * dstate + offs_n, tl.sum(g * (dt * x)[:, None], axis=0),
                 mask=mask_n)
        g = g * dA  # the part of dL/dh_{t-1} that flows through h_t
        h = h_prev
    tl.store(dh0_ptr + b * dim * dstate + dn, g, mask=mask_dn)
    tl.store(dA_part_ptr + b * dim * dstate + dn, gA, mask=mask_dn)
    tl.store(dD_part_ptr + b * dim + offs_d, gD, mask=mask_d)
    tl.store(dbias_part_ptr + b * dim + offs_d, gbias, mask=mask_d)


def _rows(t: torch.Tensor) -> tuple[torch.Tensor, int]:
    """t [batch, T, n] as rows b*T + t at a uniform stride with unit stride inside (a view if it already is)."""
    batch, T, _ = t.shape
    if t.stride(2) != 1 or (batch > 1 and T > 1 and t.stride(0) != T * t.stride(1)):
        t = t.contiguous()
    return t, (t.stride(1) if T > 1 else t.stride(0))


class SelectiveScanTriton(torch.autograd.Function):
    """(x, dt, z [batch, T, dim], A [dim, N], B, C [batch, T, N], D, dt_bias [dim] or None, h0 [batch, dim, N] fp32)
    -> (y [batch, T, dim] in x's dtype, h_T [batch, dim, N] fp32). Same math as `selective_scan_ref`."""

    @staticmethod
    def forward(ctx, x, dt, A, B, C, D, z, dt_bias, h0, dt_softplus):
        batch, T, dim = x.shape
        dstate = A.shape[1]
        has_z = z is not None
        (x, sx), (dt, sdt), (B, sb), (C, sc) = _rows(x), _rows(dt), _rows(B), _rows(C)
        z, sz = _rows(z) if has_z else (x, 0)
        A, h0 = A.float().contiguous(), h0.float().contiguous()
        y = torch.empty(batch, T, dim, dtype=x.dtype, device=x.device)
        hT = torch.empty_like(h0)
        save = any(ctx.needs_input_grad)
        ctx.set_materialize_grads(False)  # an unused output (often the final state) gets no zeros tensor
        hs = torch.empty(batch, T + 1, dim, dstate, dtype=torch.float32, device=x.device) if save else hT
        flags = dict(HAS_D=D is not None, HAS_Z=has_z, HAS_BIAS=dt_bias is not None, SOFTPLUS=dt_softplus,
                     BLOCK_D=BLOCK_D, BLOCK_N=triton.next_power_of_2(dstate))
        _scan_fwd_kernel[(triton.cdiv(dim, BLOCK_D), batch)](
            x, dt, A, B, C, x if D is None else D, z, x if dt_bias is None else dt_bias, h0, y, hs, hT,
            sx, sdt, sb, sc, sz, T, dim, dstate, SAVE=save, **flags, num_warps=NUM_WARPS,
        )  # fmt: skip
        if save:
            ctx.save_for_backward(x, dt, A, B, C, D, z if has_z else None, dt_bias, hs)
            ctx.strides, ctx.flags = (sx, sdt, sb, sc, sz), flags
        return y, hT

    @staticmethod
    def backward(ctx, dy, dhT):
        x, dt, A, B, C, D, z, dt_bias, hs = ctx.saved_tensors
        batch, T, dim = x.shape
        dstate = A.shape[1]
        dev = x.device
        dy = torch.zeros(batch, T, dim, dtype=x.dtype, device=dev) if dy is None else dy.contiguous()
        n_blocks = triton.cdiv(dim, BLOCK_D)
        dx = torch.empty(batch, T, dim, dtype=x.dtype, device=dev)
        ddt = torch.empty(batch, T, dim, dtype=dt.dtype, device=dev)
        dz = torch.empty(batch, T, dim, dtype=z.dtype, device=dev) if z is not None else dx
        dA_part = torch.empty(batch, dim, dstate, dtype=torch.float32, device=dev)
        dB_part = torch.empty(n_blocks, batch, T, dstate, dtype=torch.float32, device=dev)
        dC_part = torch.empty_like(dB_part)
        dD_part = torch.empty(batch, dim, dtype=torch.float32, device=dev)
        dbias_part = torch.empty_like(dD_part)
        dh0 = torch.empty(batch, dim, dstate, dtype=torch.float32, device=dev)
        _scan_bwd_kernel[(n_blocks, batch)](
            x, dt, A, B, C, x if D is None else D, x if z is None else z, x if dt_bias is None else dt_bias, hs,
            dy, dy if dhT is None else dhT.float().contiguous(),
            dx, ddt, dz, dA_part, dB_part, dC_part, dD_part, dbias_part, dh0,
            *ctx.strides, T, batch, dim, dstate, HAS_DHT=dhT is not None, **ctx.flags, num_warps=NUM_WARPS,
        )  # fmt: skip
        return (
            dx, ddt, dA_part.sum(0), dB_part.sum(0), dC_part.sum(0),
            None if D is None else dD_part.sum(0), None if z is None else dz,
            None if dt_bias is None else dbias_part.sum(0), dh0, None,
        )  # fmt: skip


def selective_scan_triton(
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
) -> tuple[torch.Tensor, torch.Tensor]:
    """Differentiable fused scan (see `SelectiveScanTriton`): y in x's dtype and the final state (fp32)."""
    return SelectiveScanTriton.apply(x, dt, A, B, C, D, z, dt_bias, h0, dt_softplus)
