"""One-token mLSTM decode step for a batch, in Triton (layout and math: see naive.py).

One program per (sequence, head, V-block) updates its slice of C in place in the pool slot of the
sequence and produces its slice of h; n and m are recomputed by each program from the old values
and written aside by V-block 0, then scattered into the pool (no program reads a row another has
already overwritten).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from archrouter.kernels.mlstm.chunk import _logsigmoid

# Triton 3.6 can abort in LLVM on some tile/warp shapes (see benchmarks/bench_xlstm.py --preflight)
NUM_WARPS = int(os.environ.get("ARCHROUTER_MLSTM_NUM_WARPS", "4"))


@triton.jit
def _step(
    q_ptr,
    k_ptr,
    v_ptr,
    i_ptr,
    f_ptr,
    h_ptr,
    C_ptr,
    n_ptr,
    m_ptr,
    slots_ptr,
    nf_ptr,
    mf_ptr,
    scale,
    eps,
    H: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    BKF: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
):
    vb, s, h = tl.program_id(0), tl.program_id(1).to(tl.int64), tl.program_id(2)
    slot = tl.load(slots_ptr + s).to(tl.int64)
    row = s * H + h
    prow = slot * H + h
    ig = tl.load(i_ptr + row).to(tl.float32)
    logf = _logsigmoid(tl.load(f_ptr + row).to(tl.float32))
    m0 = tl.load(m_ptr + prow)
    m1 = tl.maximum(logf + m0, ig)
    fa = tl.exp(logf + m0 - m1)
    ia = tl.exp(ig - m1)

    okf = tl.arange(0, BKF)
    mkf = okf < K
    qf = tl.load(q_ptr + row * K + okf, mask=mkf, other=0.0).to(tl.float32) * scale
    kf = tl.load(k_ptr + row * K + okf, mask=mkf, other=0.0).to(tl.float32)
    n1 = fa * tl.load(n_ptr + prow * K + okf, mask=mkf, other=0.0) + ia * kf
    den = tl.maximum(tl.abs(tl.sum(qf * n1, 0)), tl.exp(-m1)) + eps

    ov = vb * BV + tl.arange(0, BV)
    mv = ov < V
    vv = tl.load(v_ptr + row * V + ov, mask=mv, other=0.0).to(tl.float32) * ia
    acc = tl.zeros([BV], dtype=tl.float32)
    for k0 in range(0, K, BK):
        ok = k0 + tl.arange(0, BK)
        mk = ok < K
        kk = tl.load(k_ptr + row * K + ok, mask=mk, other=0.0).to(tl.float32)
        qk = tl.load(q_ptr + row * K + ok, mask=mk, other=0.0).to(tl.float32) * scale
        ptr = C_ptr + prow * K * V + ok[:, None] * V + ov[None, :]
        msk = mk[:, None] & mv[None, :]
        Cb = fa * tl.load(ptr, mask=msk, other=0.0) + kk[:, None] * vv[None, :]
        tl.store(ptr, Cb, mask=msk)
        acc += tl.sum(qk[:, None] * Cb, 0)
    tl.store(h_ptr + row * V + ov, (acc / den).to(h_ptr.dtype.element_ty), mask=mv)
    if vb == 0:
        tl.store(nf_ptr + row * K + okf, n1, mask=mkf)
        tl.store(mf_ptr + row, m1)


def _num_sms(device: torch.device) -> int:
    if device.type != "cuda":
        return 1
    return torch.cuda.get_device_properties(device).multi_processor_count


def mlstm_step_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    i: torch.Tensor,
    f: torch.Tensor,
    C: torch.Tensor,
    n: torch.Tensor,
    m: torch.Tensor,
    slots: torch.Tensor,
    *,
    scale: float | None = None,
    eps: float = 1e-6,
) -> torch.Tensor:
    """q, k (N, H, K), v (N, H, V), i, f (N, H): h (N, H, V); pool rows `slots` advance one step."""
    N, H, K = q.shape
    V = v.shape[-1]
    scale = K**-0.5 if scale is None else scale
    q, k, v, i, f = (x.contiguous() for x in (q, k, v, i, f))
    h = torch.empty(N, H, V, dtype=q.dtype, device=q.device)
    nf = torch.empty(N, H, K, dtype=torch.float32, device=q.device)
    mf = torch.empty(N, H, dtype=torch.float32, device=q.device)
    BV = min(64, max(16, triton.next_power_of_2(V)))
    # small batches: narrower V-blocks so that every SM gets a slice of the state to stream
    while BV > 16 and N * H * triton.cdiv(V, BV) < 2 * _num_sms(q.device):
        BV //= 2
    BK = min(64, max(16, triton.next_power_of_2(K)))
    _step[(triton.cdiv(V, BV), N, H)](
        q,
        k,
        v,
        i,
        f,
        h,
        C,
        n,
        m,
        slots,
        nf,
        mf,
        scale,
        eps,
        H=H,
        K=K,
        V=V,
        BKF=triton.next_power_of_2(K),
        BK=BK,
        BV=BV,
        num_warps=NUM_WARPS,
    )
    sl = slots.long()
    n.index_copy_(0, sl, nf)
    m.index_copy_(0, sl, mf)
    return h
