"""Chunkwise-parallel mLSTM prefill in Triton (layout and math: see naive.py).

Two kernels, as in fla's chunk ops and NX-AI's TFLA "limit chunk":

1. ``_chunk_states``: per (sequence, head, K-block, V-block) walk the chunks of the sequence,
   storing each chunk's starting (C, n, m) and leaving the final state;
2. ``_chunk_output``: per (chunk, head, V-block), in parallel, the gated intra-chunk attention plus
   the inter-chunk term read from the stored chunk-start state.

Chunks never straddle two sequences (each sequence starts a new chunk), so a packed
variable-length batch needs no padding, and only the rows of ``slots`` in the state pool change.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

# Triton 3.6 can abort in LLVM on some tile/warp shapes (see benchmarks/bench_xlstm.py --preflight)
NUM_WARPS = int(os.environ.get("ARCHROUTER_MLSTM_NUM_WARPS", "4"))


@triton.jit
def _logsigmoid(x):
    return tl.minimum(x, 0.0) - tl.log(1.0 + tl.exp(-tl.abs(x)))


@triton.jit
def _chunk_states(
    k_ptr,
    v_ptr,
    i_ptr,
    f_ptr,
    C_ptr,
    n_ptr,
    m_ptr,
    slots_ptr,
    cu_ptr,
    coff_ptr,
    Cs_ptr,
    ns_ptr,
    ms_ptr,
    nf_ptr,
    mf_ptr,
    H: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    CS: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    PRECISION: tl.constexpr,
):
    pid_kv, s, h = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    NV: tl.constexpr = (V + BV - 1) // BV
    kb, vb = pid_kv // NV, pid_kv % NV
    bos = tl.load(cu_ptr + s).to(tl.int64)
    eos = tl.load(cu_ptr + s + 1).to(tl.int64)
    coff = tl.load(coff_ptr + s).to(tl.int64)
    slot = tl.load(slots_ptr + s).to(tl.int64)

    ok = kb * BK + tl.arange(0, BK)
    ov = vb * BV + tl.arange(0, BV)
    mk, mv = ok < K, ov < V
    mkv = mk[:, None] & mv[None, :]
    c_off = ok[:, None] * V + ov[None, :]
    Cb = tl.load(C_ptr + (slot * H + h) * K * V + c_off, mask=mkv, other=0.0)
    nb = tl.load(n_ptr + (slot * H + h) * K + ok, mask=mk, other=0.0)
    mb = tl.load(m_ptr + slot * H + h)

    ot = tl.arange(0, CS)
    nchunks = tl.cdiv(eos - bos, CS)
    for c in range(0, nchunks):
        cid = coff + c
        tl.store(Cs_ptr + (cid * H + h) * K * V + c_off, Cb, mask=mkv)
        if vb == 0:
            tl.store(ns_ptr + (cid * H + h) * K + ok, nb, mask=mk)
        if pid_kv == 0:
            tl.store(ms_ptr + cid * H + h, mb)
        t = bos + c * CS + ot
        mt = t < eos
        logf = tl.where(mt, _logsigmoid(tl.load(f_ptr + t * H + h, mask=mt, other=0.0).to(tl.float32)), 0.0)
        b = tl.cumsum(logf, 0)
        b_last = tl.sum(logf, 0)
        ig = tl.load(i_ptr + t * H + h, mask=mt, other=float("-inf")).to(tl.float32)
        a = b_last - b + ig
        m_new = tl.maximum(b_last + mb, tl.max(a, 0))
        kc = tl.load(
            k_ptr + (t[:, None] * H + h) * K + ok[None, :], mask=mt[:, None] & mk[None, :], other=0.0
        )
        vc = tl.load(
            v_ptr + (t[:, None] * H + h) * V + ov[None, :], mask=mt[:, None] & mv[None, :], other=0.0
        )
        kw = kc.to(tl.float32) * tl.exp(a - m_new)[:, None]
        decay = tl.exp(b_last + mb - m_new)
        Cb = decay * Cb + tl.dot(tl.trans(kw.to(vc.dtype)), vc, input_precision=PRECISION)
        nb = decay * nb + tl.sum(kw, 0)
        mb = m_new
    tl.store(C_ptr + (slot * H + h) * K * V + c_off, Cb, mask=mkv)
    # n and m are shared by every V-block program: write them aside, the host scatters them
    if vb == 0:
        tl.store(nf_ptr + (s * H + h) * K + ok, nb, mask=mk)
    if pid_kv == 0:
        tl.store(mf_ptr + s * H + h, mb)


@triton.jit
def _chunk_output(
    q_ptr,
    k_ptr,
    v_ptr,
    i_ptr,
    f_ptr,
    h_ptr,
    Cs_ptr,
    ns_ptr,
    ms_ptr,
    cseq_ptr,
    cstart_ptr,
    cu_ptr,
    scale,
    eps,
    H: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    CS: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    PRECISION: tl.constexpr,
):
    vb, cid, h = tl.program_id(0), tl.program_id(1).to(tl.int64), tl.program_id(2)
    s = tl.load(cseq_ptr + cid)
    t0 = tl.load(cstart_ptr + cid).to(tl.int64)
    eos = tl.load(cu_ptr + s + 1).to(tl.int64)
    ot = tl.arange(0, CS)
    t = t0 + ot
    mt = t < eos
    ov = vb * BV + tl.arange(0, BV)
    mv = ov < V

    logf = tl.where(mt, _logsigmoid(tl.load(f_ptr + t * H + h, mask=mt, other=0.0).to(tl.float32)), 0.0)
    b = tl.cumsum(logf, 0)
    ig = tl.load(i_ptr + t * H + h, mask=mt, other=float("-inf")).to(tl.float32)
    m0 = tl.load(ms_ptr + cid * H + h)

    S = tl.zeros([CS, CS], dtype=tl.float32)
    qC = tl.zeros([CS, BV], dtype=tl.float32)
    qn = tl.zeros([CS], dtype=tl.float32)
    for k0 in range(0, K, BK):
        ok = k0 + tl.arange(0, BK)
        mk = ok < K
        qc = tl.load(
            q_ptr + (t[:, None] * H + h) * K + ok[None, :], mask=mt[:, None] & mk[None, :], other=0.0
        )
        kc = tl.load(
            k_ptr + (t[:, None] * H + h) * K + ok[None, :], mask=mt[:, None] & mk[None, :], other=0.0
        )
        S += tl.dot(qc, tl.trans(kc), input_precision=PRECISION)
        Cb = tl.load(
            Cs_ptr + (cid * H + h) * K * V + ok[:, None] * V + ov[None, :],
            mask=mk[:, None] & mv[None, :],
            other=0.0,
        )
        qC += tl.dot(qc, Cb.to(qc.dtype), input_precision=PRECISION)
        nb = tl.load(ns_ptr + (cid * H + h) * K + ok, mask=mk, other=0.0)
        qn += tl.sum(qc.to(tl.float32) * nb[None, :], 1)

    causal = ot[:, None] >= ot[None, :]
    logD = tl.where(causal, b[:, None] - b[None, :] + ig[None, :], float("-inf"))
    m_inter = b + m0
    m_row = tl.maximum(m_inter, tl.max(logD, 1))
    Sg = S * scale * tl.exp(logD - m_row[:, None])
    inter = tl.exp(m_inter - m_row) * scale
    vc = tl.load(v_ptr + (t[:, None] * H + h) * V + ov[None, :], mask=mt[:, None] & mv[None, :], other=0.0)
    num = inter[:, None] * qC + tl.dot(Sg.to(vc.dtype), vc, input_precision=PRECISION)
    den = inter * qn + tl.sum(Sg, 1)
    out = num / (tl.maximum(tl.abs(den), tl.exp(-m_row)) + eps)[:, None]
    tl.store(
        h_ptr + (t[:, None] * H + h) * V + ov[None, :],
        out.to(h_ptr.dtype.element_ty),
        mask=mt[:, None] & mv[None, :],
    )


def chunk_layout(
    cu_seqlens: torch.Tensor, chunk_size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sequence first chunk id, and per chunk its sequence and first token (one host sync)."""
    cu = cu_seqlens.tolist()
    counts = [-(-(e - b) // chunk_size) for b, e in zip(cu[:-1], cu[1:], strict=True)]
    coff, seq, start = [0], [], []
    for s, (b, c) in enumerate(zip(cu[:-1], counts, strict=True)):
        coff.append(coff[-1] + c)
        seq += [s] * c
        start += [b + j * chunk_size for j in range(c)]
    dev = cu_seqlens.device
    as_t = lambda x: torch.tensor(x, dtype=torch.int32, device=dev)  # noqa: E731
    return as_t(coff), as_t(seq), as_t(start)


def dense_chunk_layout(
    batch: int, length: int, chunk_size: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`chunk_layout` of `batch` sequences of `length` tokens, built on the device without a host sync."""
    per = -(-length // chunk_size)
    ids = torch.arange(batch * per, dtype=torch.int32, device=device)
    seq = ids // per
    start = seq * length + (ids % per) * chunk_size
    coff = torch.arange(0, (batch + 1) * per, per, dtype=torch.int32, device=device)
    return coff, seq, start


def mlstm_chunkwise_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    i: torch.Tensor,
    f: torch.Tensor,
    C: torch.Tensor,
    n: torch.Tensor,
    m: torch.Tensor,
    slots: torch.Tensor,
    cu_seqlens: torch.Tensor,
    *,
    scale: float | None = None,
    eps: float = 1e-6,
    chunk_size: int = 64,
    layout: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    num_stages: int | None = None,
) -> torch.Tensor:
    """Prefill: returns h (T, H, V) and leaves each sequence's final (C, n, m) in its pool slot.

    `layout` (from `chunk_layout` / `dense_chunk_layout`) may be passed to skip the host sync.
    `num_stages` overrides Triton's software-pipelining depth (the benchmark compares 1 with the default).
    """
    T, H, K = q.shape
    V = v.shape[-1]
    N = cu_seqlens.numel() - 1
    scale = K**-0.5 if scale is None else scale
    q, k, v, i, f = (x.contiguous() for x in (q, k, v, i, f))
    coff, cseq, cstart = layout if layout is not None else chunk_layout(cu_seqlens, chunk_size)
    NC = cseq.numel()
    dev = q.device
    Cs = torch.empty(NC, H, K, V, dtype=torch.float32, device=dev)
    ns = torch.empty(NC, H, K, dtype=torch.float32, device=dev)
    ms = torch.empty(NC, H, dtype=torch.float32, device=dev)
    nf = torch.empty(N, H, K, dtype=torch.float32, device=dev)
    mf = torch.empty(N, H, dtype=torch.float32, device=dev)
    precision = "ieee" if q.dtype == torch.float32 else "tf32"
    launch = {} if num_stages is None else {"num_stages": num_stages}  # None: Triton's default
    BK = min(64, max(16, triton.next_power_of_2(K)))
    BV = min(64, max(16, triton.next_power_of_2(V)))
    grid = (triton.cdiv(K, BK) * triton.cdiv(V, BV), N, H)
    _chunk_states[grid](
        k,
        v,
        i,
        f,
        C,
        n,
        m,
        slots,
        cu_seqlens,
        coff,
        Cs,
        ns,
        ms,
        nf,
        mf,
        H=H,
        K=K,
        V=V,
        CS=chunk_size,
        BK=BK,
        BV=BV,
        PRECISION=precision,
        num_warps=NUM_WARPS,
        **launch,
    )
    sl = slots.long()
    n.index_copy_(0, sl, nf)
    m.index_copy_(0, sl, mf)
    h = torch.empty(T, H, V, dtype=q.dtype, device=dev)
    _chunk_output[(triton.cdiv(V, BV), NC, H)](
        q,
        k,
        v,
        i,
        f,
        h,
        Cs,
        ns,
        ms,
        cseq,
        cstart,
        cu_seqlens,
        scale,
        eps,
        H=H,
        K=K,
        V=V,
        CS=chunk_size,
        BK=BK,
        BV=BV,
        PRECISION=precision,
        num_warps=NUM_WARPS,
        **launch,
    )
    return h
