"""The sLSTM recurrence over whole sequences in one Triton kernel (layout and math: see naive.py).

One program per (sequence, head) walks the sequence: it keeps the head's h, c, n, m in registers,
computes the hidden-to-hidden product R h_{t-1} for the four gates inside the kernel, and writes
the final state back to the pool slot once. A decode step is the same kernel over length-1 sequences.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl


@triton.jit
def _logsigmoid(x):
    return tl.minimum(x, 0.0) - tl.log(1.0 + tl.exp(-tl.abs(x)))


@triton.jit
def _gate_pre(
    x_ptr, R_ptr, b_ptr, t, g: tl.constexpr, hh, h, od, mo, R_tile, mR, NH: tl.constexpr, D: tl.constexpr
):
    Rg = tl.load(R_ptr + ((hh * 4 + g) * D) * D + R_tile, mask=mR, other=0.0).to(tl.float32)
    xg = tl.load(x_ptr + ((t * 4 + g) * NH + hh) * D + od, mask=mo, other=0.0).to(tl.float32)
    bg = tl.load(b_ptr + (g * NH + hh) * D + od, mask=mo, other=0.0).to(tl.float32)
    return xg + bg + tl.sum(Rg * h[None, :], 1)


@triton.jit
def _slstm_fwd(
    x_ptr,
    R_ptr,
    b_ptr,
    y_ptr,
    h_ptr,
    c_ptr,
    n_ptr,
    m_ptr,
    slots_ptr,
    cu_ptr,
    NH: tl.constexpr,
    D: tl.constexpr,
    BD: tl.constexpr,
):
    s, hh = tl.program_id(0), tl.program_id(1)
    bos = tl.load(cu_ptr + s).to(tl.int64)
    eos = tl.load(cu_ptr + s + 1).to(tl.int64)
    slot = tl.load(slots_ptr + s).to(tl.int64)
    od = tl.arange(0, BD)
    oi = tl.arange(0, BD)
    mo = od < D
    R_tile = od[:, None] * D + oi[None, :]
    mR = mo[:, None] & (oi < D)[None, :]
    base = (slot * NH + hh) * D + od
    h = tl.load(h_ptr + base, mask=mo, other=0.0)
    c = tl.load(c_ptr + base, mask=mo, other=0.0)
    n = tl.load(n_ptr + base, mask=mo, other=1.0)
    m = tl.load(m_ptr + base, mask=mo, other=0.0)
    for t in range(bos, eos):
        hin = h
        iraw = _gate_pre(x_ptr, R_ptr, b_ptr, t, 0, hh, hin, od, mo, R_tile, mR, NH, D)
        fraw = _gate_pre(x_ptr, R_ptr, b_ptr, t, 1, hh, hin, od, mo, R_tile, mR, NH, D)
        zraw = _gate_pre(x_ptr, R_ptr, b_ptr, t, 2, hh, hin, od, mo, R_tile, mR, NH, D)
        oraw = _gate_pre(x_ptr, R_ptr, b_ptr, t, 3, hh, hin, od, mo, R_tile, mR, NH, D)
        logfm = m + _logsigmoid(fraw)
        m1 = tl.maximum(iraw, logfm)
        ia = tl.minimum(tl.exp(iraw - m1), 1.0)
        fa = tl.minimum(tl.exp(logfm - m1), 1.0)
        ez = tl.exp(-2.0 * tl.abs(zraw))  # tanh without overflow
        tz = tl.where(zraw >= 0, 1.0, -1.0) * (1.0 - ez) / (1.0 + ez)
        c = fa * c + ia * tz
        n = fa * n + ia
        m = m1
        eo = tl.exp(-tl.abs(oraw))  # sigmoid without overflow
        h = tl.where(mo, tl.where(oraw >= 0, 1.0, eo) / (1.0 + eo) * c / n, 0.0)
        tl.store(y_ptr + (t * NH + hh) * D + od, h.to(y_ptr.dtype.element_ty), mask=mo)
    tl.store(h_ptr + base, h, mask=mo)
    tl.store(c_ptr + base, c, mask=mo)
    tl.store(n_ptr + base, n, mask=mo)
    tl.store(m_ptr + base, m, mask=mo)


def slstm_scan_triton(x, R, b, h, c, n, m, slots, cu_seqlens) -> torch.Tensor:
    """x (T, 4, NH, D), R (NH, 4, D, D), b (4, NH, D); pool h, c, n, m (P, NH, D) fp32 -> y (T, NH, D)."""
    T, _, NH, D = x.shape
    x, R, b = x.contiguous(), R.contiguous(), b.contiguous()
    y = torch.empty(T, NH, D, dtype=x.dtype, device=x.device)
    BD = max(16, triton.next_power_of_2(D))
    _slstm_fwd[(cu_seqlens.numel() - 1, NH)](
        x,
        R,
        b,
        y,
        h,
        c,
        n,
        m,
        slots,
        cu_seqlens,
        NH=NH,
        D=D,
        BD=BD,
        num_warps=int(os.environ.get("ARCHROUTER_SLSTM_NUM_WARPS", 4 if BD <= 64 else 8)),
    )
    return y


def slstm_step_triton(x, R, b, h, c, n, m, slots) -> torch.Tensor:
    cu = torch.arange(x.shape[0] + 1, dtype=torch.int32, device=x.device)
    return slstm_scan_triton(x, R, b, h, c, n, m, slots, cu)
