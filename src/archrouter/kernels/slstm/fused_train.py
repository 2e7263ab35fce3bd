"""Differentiable sLSTM for training in two Triton kernels: one launch forward, one launch backward.

Same arguments and results as `kernels.slstm.train.slstm_scan_dense_torch` (dense [batch, T] batches,
fp32 inside) and the same math as `kernels.slstm.naive.slstm_cell_naive`, gradients included: the
backward is the adjoint that autograd derives from that cell (the stabiliser m gets a gradient, the
``maximum`` splits it evenly on ties, ``clamp(max=1)`` lets it through), so the two paths differ only
in rounding.

Each kernel has one program per (block of BB batch rows, head) and walks T inside, the state in
registers; the recurrent product of a step is four [BB, D] x [D, D] ``tl.dot`` (fp32 FMA, "ieee"),
so BB is at least 16 (tl.dot's minimum) and D is padded to a power of two >= 16. Up to D = 64 the
head's four recurrent matrices are loaded once per launch (they stay in shared memory); above that
they do not fit, and each step rereads them from L2 in KC-row chunks against h_{t-1} (forward) or
d raw_t (backward) read back from global memory after a barrier. A step's inputs are loaded one
step ahead, off the recurrence's critical path. The ARCHROUTER_SLSTM_TRAIN_* variables (see
`_launch_opts`) override the meta-parameters for tuning.

- forward: raw_t = x_t + b + R h_{t-1} -> cell. Saves raw (B, T, 4, NH, D) and the states after each
  step, h/c/n/m (B, T+1, NH, D) with row 0 the initial state, all fp32.
- backward, t = T-1 .. 0: recomputes the cell from raw_t and the state t-1, takes dh_t = dy_t + the
  carried dh and the carried dc, dn, dm, writes d raw_t and carries dh_{t-1} = sum_g d raw_{g,t} R_g.
  Outside the kernel: dx = d raw, db = sum over (B, T) of d raw, dR = sum_t d raw_t h_{t-1}^T
  (one batched matmul).
"""

from __future__ import annotations

import os
from typing import Any

import torch
import triton
import triton.language as tl

BB = 16  # batch rows per program: tl.dot needs M >= 16


@triton.jit
def _logsigmoid(x):
    return tl.minimum(x, 0.0) - tl.log(1.0 + tl.exp(-tl.abs(x)))


@triton.jit
def _sigmoid(x):
    e = tl.exp(-tl.abs(x))  # no overflow for large |x|
    return tl.where(x >= 0, 1.0, e) / (1.0 + e)


@triton.jit
def _tanh(x):
    e = tl.exp(-2.0 * tl.abs(x))
    return tl.where(x >= 0, 1.0, -1.0) * (1.0 - e) / (1.0 + e)


@triton.jit
def _dot_tile(a, ptr, tile, mask, acc, PREC: tl.constexpr):
    return tl.dot(a, tl.load(ptr + tile, mask=mask, other=0.0), acc, input_precision=PREC)


@triton.jit
def _load4(ptr, off, stride, mask):
    """The four gate tiles of one step."""
    a = tl.load(ptr + off, mask=mask, other=0.0)
    b = tl.load(ptr + off + stride, mask=mask, other=0.0)
    c = tl.load(ptr + off + 2 * stride, mask=mask, other=0.0)
    d = tl.load(ptr + off + 3 * stride, mask=mask, other=0.0)
    return a, b, c, d


@triton.jit
def _cell(iraw, fraw, zraw, oraw, c, n, m):
    """slstm_cell_naive, plus the intermediates the backward needs."""
    logfm = m + _logsigmoid(fraw)
    m1 = tl.maximum(iraw, logfm)
    ia = tl.minimum(tl.exp(iraw - m1), 1.0)
    fa = tl.minimum(tl.exp(logfm - m1), 1.0)
    tz = _tanh(zraw)
    so = _sigmoid(oraw)
    c1 = fa * c + ia * tz
    n1 = fa * n + ia
    return so * c1 / n1, c1, n1, m1, logfm, ia, fa, tz, so


@triton.jit
def _slstm_train_fwd(
    x_ptr,  # (B, T, 4, NH, D), any float dtype
    R_ptr,  # (NH, 4, D, D) fp32: R[h, g, out, in]
    b_ptr,  # (4, NH, D) fp32
    raw_ptr,  # out (B, T, 4, NH, D) fp32
    hs_ptr,  # in/out (B, T+1, NH, D) fp32; row 0 holds the initial state on entry
    cs_ptr,
    ns_ptr,
    ms_ptr,
    B,
    T,
    NH: tl.constexpr,
    D: tl.constexpr,
    BB: tl.constexpr,
    BD: tl.constexpr,
    PREC: tl.constexpr,
    HOIST_R: tl.constexpr,
    KC: tl.constexpr,
):
    pb, hh = tl.program_id(0), tl.program_id(1)
    rb = pb * BB + tl.arange(0, BB)
    od = tl.arange(0, BD)
    mb, mo = rb < B, od < D
    mask = mb[:, None] & mo[None, :]
    rb64 = rb.to(tl.int64)
    # R_g^T as [in, out] tiles: raw_g = h @ R_g^T
    RT_tile = od[None, :] * D + od[:, None]
    mR = mo[:, None] & mo[None, :]
    Rbase = R_ptr + hh * 4 * D * D
    if HOIST_R:
        RTi = tl.load(Rbase + 0 * D * D + RT_tile, mask=mR, other=0.0)
        RTf = tl.load(Rbase + 1 * D * D + RT_tile, mask=mR, other=0.0)
        RTz = tl.load(Rbase + 2 * D * D + RT_tile, mask=mR, other=0.0)
        RTo = tl.load(Rbase + 3 * D * D + RT_tile, mask=mR, other=0.0)
    bi = tl.load(b_ptr + (0 * NH + hh) * D + od, mask=mo, other=0.0)[None, :]
    bf = tl.load(b_ptr + (1 * NH + hh) * D + od, mask=mo, other=0.0)[None, :]
    bz = tl.load(b_ptr + (2 * NH + hh) * D + od, mask=mo, other=0.0)[None, :]
    bo = tl.load(b_ptr + (3 * NH + hh) * D + od, mask=mo, other=0.0)[None, :]
    # state rows: ((b * (T+1) + t) * NH + hh) * D + o; gate rows: (((b * T + t) * 4 + g) * NH + hh) * D + o
    s_row = (rb64 * (T + 1) * NH + hh) * D
    x_row = (rb64 * T * 4 * NH + hh) * D
    s_off = s_row[:, None] + od[None, :]
    x_off = x_row[:, None] + od[None, :]
    h = tl.load(hs_ptr + s_off, mask=mask, other=0.0)
    c = tl.load(cs_ptr + s_off, mask=mask, other=0.0)
    n = tl.load(ns_ptr + s_off, mask=mask, other=0.0)
    m = tl.load(ms_ptr + s_off, mask=mask, other=0.0)
    # inputs are loaded one step ahead, so their latency is off the recurrence's critical path
    xi, xf, xz, xg = _load4(x_ptr, x_off, NH * D, mask)
    for t in range(T):
        xo = x_off + t * 4 * NH * D
        iraw = xi.to(tl.float32) + bi
        fraw = xf.to(tl.float32) + bf
        zraw = xz.to(tl.float32) + bz
        oraw = xg.to(tl.float32) + bo
        xi, xf, xz, xg = _load4(
            x_ptr, xo + 4 * NH * D, NH * D, mask & (od[None, :] * 0 + t + 1 < T)
        )  # (tensor compare: the interpreter)
        if HOIST_R:
            iraw = tl.dot(h, RTi, iraw, input_precision=PREC)
            fraw = tl.dot(h, RTf, fraw, input_precision=PREC)
            zraw = tl.dot(h, RTz, zraw, input_precision=PREC)
            oraw = tl.dot(h, RTo, oraw, input_precision=PREC)
        else:  # large D: R does not fit on chip; stream it (L2) in KC-row chunks against h_{t-1} (global)
            tl.debug_barrier()  # h_{t-1}, stored by the whole program last step, is visible
            for k0 in range(0, BD, KC):
                ok = k0 + tl.arange(0, KC)
                hk = tl.load(hs_ptr + (s_row + t * NH * D)[:, None] + ok[None, :], mask=mb[:, None] & (ok < D)[None, :])
                RTk = od[None, :] * D + ok[:, None]
                mk = (ok < D)[:, None] & mo[None, :]
                iraw = _dot_tile(hk, Rbase + 0 * D * D, RTk, mk, iraw, PREC)
                fraw = _dot_tile(hk, Rbase + 1 * D * D, RTk, mk, fraw, PREC)
                zraw = _dot_tile(hk, Rbase + 2 * D * D, RTk, mk, zraw, PREC)
                oraw = _dot_tile(hk, Rbase + 3 * D * D, RTk, mk, oraw, PREC)
        tl.store(raw_ptr + xo, iraw, mask=mask)
        tl.store(raw_ptr + xo + NH * D, fraw, mask=mask)
        tl.store(raw_ptr + xo + 2 * NH * D, zraw, mask=mask)
        tl.store(raw_ptr + xo + 3 * NH * D, oraw, mask=mask)
        h, c, n, m, _, _, _, _, _ = _cell(iraw, fraw, zraw, oraw, c, n, m)
        h = tl.where(mask, h, 0.0)  # padding lanes stay out of the next product
        st = s_off + (t + 1) * NH * D
        tl.store(hs_ptr + st, h, mask=mask)
        tl.store(cs_ptr + st, c, mask=mask)
        tl.store(ns_ptr + st, n, mask=mask)
        tl.store(ms_ptr + st, m, mask=mask)


@triton.jit
def _slstm_train_bwd(
    raw_ptr,  # (B, T, 4, NH, D) fp32 from the forward; d raw goes to draw_ptr (same layout)
    cs_ptr,  # (B, T+1, NH, D) fp32 from the forward
    ns_ptr,
    ms_ptr,
    R_ptr,  # (NH, 4, D, D) fp32
    dy_ptr,  # (B, T, NH, D) fp32
    dh_ptr,  # in/out (B, NH, D) fp32: gradient of the final state on entry, of the initial state on exit
    dc_ptr,
    dn_ptr,
    dm_ptr,
    draw_ptr,
    B,
    T,
    NH: tl.constexpr,
    D: tl.constexpr,
    BB: tl.constexpr,
    BD: tl.constexpr,
    PREC: tl.constexpr,
    HOIST_R: tl.constexpr,
    KC: tl.constexpr,
):
    pb, hh = tl.program_id(0), tl.program_id(1)
    rb = pb * BB + tl.arange(0, BB)
    od = tl.arange(0, BD)
    mb, mo = rb < B, od < D
    mask = mb[:, None] & mo[None, :]
    rb64 = rb.to(tl.int64)
    # R_g as [out, in] tiles: dh_{t-1} = sum_g draw_g @ R_g
    R_tile = od[:, None] * D + od[None, :]
    mR = mo[:, None] & mo[None, :]
    Rbase = R_ptr + hh * 4 * D * D
    if HOIST_R:
        Ri = tl.load(Rbase + 0 * D * D + R_tile, mask=mR, other=0.0)
        Rf = tl.load(Rbase + 1 * D * D + R_tile, mask=mR, other=0.0)
        Rz = tl.load(Rbase + 2 * D * D + R_tile, mask=mR, other=0.0)
        Ro = tl.load(Rbase + 3 * D * D + R_tile, mask=mR, other=0.0)
    f_off = (rb64[:, None] * NH + hh) * D + od[None, :]
    s_row = (rb64 * (T + 1) * NH + hh) * D
    x_row = (rb64 * T * 4 * NH + hh) * D
    s_off = s_row[:, None] + od[None, :]
    x_off = x_row[:, None] + od[None, :]
    y_off = (rb64[:, None] * T * NH + hh) * D + od[None, :]
    dh = tl.load(dh_ptr + f_off, mask=mask, other=0.0)
    dc = tl.load(dc_ptr + f_off, mask=mask, other=0.0)
    dn = tl.load(dn_ptr + f_off, mask=mask, other=0.0)
    dm = tl.load(dm_ptr + f_off, mask=mask, other=0.0)
    # step t's inputs (raw_t, the state before t, dy_t) are loaded one step ahead
    t = T - 1
    ri, rf, rz, ro = _load4(raw_ptr, x_off + t * 4 * NH * D, NH * D, mask)
    pc = tl.load(cs_ptr + s_off + t * NH * D, mask=mask, other=0.0)
    pn = tl.load(ns_ptr + s_off + t * NH * D, mask=mask, other=0.0)
    pm = tl.load(ms_ptr + s_off + t * NH * D, mask=mask, other=0.0)
    pdy = tl.load(dy_ptr + y_off + t * NH * D, mask=mask, other=0.0)
    for k in range(T):
        t = T - 1 - k
        xo = x_off + t * 4 * NH * D
        iraw, fraw, zraw, oraw, c0, n0, m0 = ri, rf, rz, ro, pc, pn, pm
        dh += pdy
        mp = mask & (od[None, :] * 0 + t > 0)
        ri, rf, rz, ro = _load4(raw_ptr, xo - 4 * NH * D, NH * D, mp)
        pc = tl.load(cs_ptr + s_off + (t - 1) * NH * D, mask=mp, other=0.0)
        pn = tl.load(ns_ptr + s_off + (t - 1) * NH * D, mask=mp, other=0.0)
        pm = tl.load(ms_ptr + s_off + (t - 1) * NH * D, mask=mp, other=0.0)
        pdy = tl.load(dy_ptr + y_off + (t - 1) * NH * D, mask=mp, other=0.0)
        _, c1, n1, _, logfm, ia, fa, tz, so = _cell(iraw, fraw, zraw, oraw, c0, n0, m0)
        # h = (so * c1) / n1
        dq = dh / n1
        do = dq * c1 * (so * (1.0 - so))
        dc1 = dc + dq * so
        dn1 = dn - dh * (so * c1) / (n1 * n1)
        dfa = dc1 * c0 + dn1 * n0
        dia = dc1 * tz + dn1
        dz = dc1 * ia * (1.0 - tz * tz)
        # ia = exp(iraw - m1), fa = exp(logfm - m1) (the clamps pass the gradient: both are <= 1)
        ga = dia * ia
        gl = dfa * fa
        dm1 = dm - ga - gl
        wa = tl.where(iraw > logfm, 1.0, tl.where(iraw == logfm, 0.5, 0.0))  # torch.maximum's backward
        di = ga + dm1 * wa
        dlog = gl + dm1 * (1.0 - wa)
        ef = tl.exp(-tl.abs(fraw))
        df = dlog * tl.where(fraw >= 0, ef, 1.0) / (1.0 + ef)  # d logsigmoid(f) = sigmoid(-f)
        di = tl.where(mask, di, 0.0)
        df = tl.where(mask, df, 0.0)
        dz = tl.where(mask, dz, 0.0)
        do = tl.where(mask, do, 0.0)
        tl.store(draw_ptr + xo, di, mask=mask)
        tl.store(draw_ptr + xo + NH * D, df, mask=mask)
        tl.store(draw_ptr + xo + 2 * NH * D, dz, mask=mask)
        tl.store(draw_ptr + xo + 3 * NH * D, do, mask=mask)
        if HOIST_R:
            dh = tl.dot(di, Ri, input_precision=PREC)
            dh = tl.dot(df, Rf, dh, input_precision=PREC)
            dh = tl.dot(dz, Rz, dh, input_precision=PREC)
            dh = tl.dot(do, Ro, dh, input_precision=PREC)
        else:  # large D: stream R in KC-row chunks against the d raw_t just stored
            tl.debug_barrier()  # d raw_t, stored by the whole program, is visible
            dh = tl.zeros([BB, BD], tl.float32)
            for k0 in range(0, BD, KC):
                ok = k0 + tl.arange(0, KC)
                mk = mb[:, None] & (ok < D)[None, :]
                Rk = ok[:, None] * D + od[None, :]
                mRk = (ok < D)[:, None] & mo[None, :]
                for g in tl.static_range(4):
                    dk = tl.load(draw_ptr + (x_row + (t * 4 + g) * NH * D)[:, None] + ok[None, :], mask=mk)
                    dh = _dot_tile(dk, Rbase + g * D * D, Rk, mRk, dh, PREC)
        dc = dc1 * fa
        dn = dn1 * fa
        dm = dlog  # logfm = m + logsigmoid(f)
    tl.store(dh_ptr + f_off, dh, mask=mask)
    tl.store(dc_ptr + f_off, dc, mask=mask)
    tl.store(dn_ptr + f_off, dn, mask=mask)
    tl.store(dm_ptr + f_off, dm, mask=mask)


def _launch_opts(D: int) -> dict[str, Any]:
    """Kernel meta-parameters; the ARCHROUTER_SLSTM_TRAIN_* variables override them for tuning on a GPU."""
    BD = max(16, triton.next_power_of_2(D))
    env = os.environ.get
    return {
        "BB": BB,
        "BD": BD,
        # fp32 FMA dot by default: the reference is fp32 ("tf32x3" / "tf32" trade accuracy for tensor cores)
        "PREC": env("ARCHROUTER_SLSTM_TRAIN_PREC", "ieee"),
        # R on chip for the whole launch up to D = 64 (4 x 64 x 64 fp32 = 64 KB of shared memory)
        "HOIST_R": env("ARCHROUTER_SLSTM_TRAIN_HOIST", "1" if BD <= 64 else "0") == "1",
        "KC": min(BD, int(env("ARCHROUTER_SLSTM_TRAIN_KC", 32))),
        # 16 warps at D = 64 keep the FMA dot out of register spills (ptxas, sm_90)
        "num_warps": int(env("ARCHROUTER_SLSTM_TRAIN_NUM_WARPS", {16: 4, 32: 8}.get(BD, 16))),
    }


def _launch(kernel, ptrs: tuple[torch.Tensor, ...], B: int, T: int, NH: int, D: int) -> None:
    opts = _launch_opts(D)
    try:
        kernel[(triton.cdiv(B, BB), NH)](*ptrs, B, T, NH=NH, D=D, **opts)
    except Exception as e:  # a compile / resource failure only a GPU shows: say which kernel and the way out
        raise RuntimeError(
            f"sLSTM training kernel {kernel.__name__} failed at B={B} NH={NH} D={D} {opts}: {e!r}. "
            "ARCHROUTER_SLSTM_TRAIN=torch selects the PyTorch training path."
        ) from e


class _SLSTMTrain(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, R, b, h, c, n, m):
        B, T, _, NH, D = x.shape
        dev = x.device
        x = x.contiguous()
        Rf = R.detach().float().contiguous()
        bf = b.detach().float().contiguous()
        # states after every step, row 0 = the initial state (read by both kernels)
        hs, cs, ns, ms = (torch.empty(B, T + 1, NH, D, dtype=torch.float32, device=dev) for _ in range(4))
        for buf, init in zip((hs, cs, ns, ms), (h, c, n, m), strict=True):
            buf[:, 0] = init.detach()
        raw = torch.empty(B, T, 4, NH, D, dtype=torch.float32, device=dev)
        _launch(_slstm_train_fwd, (x, Rf, bf, raw, hs, cs, ns, ms), B, T, NH, D)
        ctx.save_for_backward(Rf, raw, hs, cs, ns, ms)
        ctx.dtypes = (x.dtype, R.dtype, b.dtype, h.dtype, c.dtype, n.dtype, m.dtype)
        y = hs[:, 1:].to(x.dtype, copy=True)
        return y, hs[:, T].clone(), cs[:, T].clone(), ns[:, T].clone(), ms[:, T].clone()

    @staticmethod
    def backward(ctx, dy, dhT, dcT, dnT, dmT):
        Rf, raw, hs, cs, ns, ms = ctx.saved_tensors
        B, T, _, NH, D = raw.shape
        dev = raw.device

        def grad_or_zeros(g, shape):
            if g is None:
                return torch.zeros(shape, dtype=torch.float32, device=dev)
            # a fresh fp32 copy: the kernel overwrites the final-state gradients with the initial-state ones
            return torch.empty(shape, dtype=torch.float32, device=dev).copy_(g)

        dy = grad_or_zeros(dy, (B, T, NH, D))
        dh, dc, dn, dm = (grad_or_zeros(g, (B, NH, D)) for g in (dhT, dcT, dnT, dmT))
        draw = torch.empty_like(raw)
        _launch(_slstm_train_bwd, (raw, cs, ns, ms, Rf, dy, dh, dc, dn, dm, draw), B, T, NH, D)
        xd, Rd, bd, hd, cd, nd, md = ctx.dtypes
        need = ctx.needs_input_grad
        dx = draw.to(xd) if need[0] else None
        dR = db = None
        with torch.autocast(dev.type, enabled=False):
            if need[1]:  # dR[h, g, o, i] = sum_{b, t} draw[b, t, g, h, o] * h_{t-1}[b, h, i]
                dR = torch.einsum("btgho,bthi->hgoi", draw, hs[:, :T]).to(Rd)
            if need[2]:
                db = draw.sum((0, 1)).to(bd)
        return (
            dx,
            dR,
            db,
            dh.to(hd) if need[3] else None,
            dc.to(cd) if need[4] else None,
            dn.to(nd) if need[5] else None,
            dm.to(md) if need[6] else None,
        )


def slstm_scan_dense_triton(
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
    y, *last = _SLSTMTrain.apply(x, R, b, h, c, n, m)
    return y, tuple(last)
