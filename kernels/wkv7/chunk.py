"""Chunked WKV-7 prefill in Triton (the WY form of the generalized delta rule).

Within a chunk of C tokens with cumulative log decay G_t (inclusive) and G_{t-1} (exclusive),
write u_t = S_{t-1} a_t. Unrolling the recurrence (naive.py) gives, with
A~ = a * exp(G_excl), B^ = b * exp(-G), K^ = k * exp(-G), R~ = r * exp(G):

    U  = (I - tril_strict(A~ B^T))^-1 (A~ S0^T + tril_strict(A~ K^T) V)  =  W S0^T + U0
    Y  = R~ S0^T + tril(R~ B^T) U + tril(R~ K^T) V
    S^T = exp(G_C) S0^T + (b * exp(G_C - G))^T U + (k * exp(G_C - G))^T V

Kernel 1 (`_chunk_prepare`) computes everything that does not depend on S0, for all chunks in
parallel: W, U0, R~, the two end-decayed key blocks, the two C x C masks and exp(G_C).
Kernel 2 (`_chunk_scan`) walks the chunks of one sequence in order for one head and a block of
value rows, carrying the state in registers, and writes Y and the final state.

The inverse of the unit lower-triangular (I - L) is the product of (I + L^(2^i)), i < log2 C,
since L is nilpotent: log2(C) - 1 squarings, all tensor-core matmuls.

Range: exp(-G) grows as the chunk's decay accumulates; in fp32 this is safe while
C * max|w| < ~80 (RWKV-7's log decay is >= -exp(-0.5) = -0.607, so C <= 64 is safe).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.wkv7 import _tune


@triton.jit
def _chunk_prepare(
    r, w, k, v, a, b,  # [T_total, H, N] inputs (v: [T_total, H, V])
    W_, U0, Rt, Bb, Kb,  # [T_total, H, N] fp32 outputs (U0: [T_total, H, V])
    Mrb, Mrk,  # [T_total, H, C] fp32 outputs
    gamma,  # [num_chunks, H, N] fp32: exp(G_C), the chunk's total decay
    chunk_bounds,  # [num_chunks, 2] int32: first token, one past last token (ragged batches)
    T,  # tokens per sequence (equal-length batches)
    H: tl.constexpr,
    N: tl.constexpr,
    V: tl.constexpr,
    C: tl.constexpr,
    LOG2C: tl.constexpr,
    PREC: tl.constexpr,
    EQUAL_LEN: tl.constexpr,
):
    i_c = tl.program_id(0).to(tl.int64)
    i_h = tl.program_id(1).to(tl.int64)
    if EQUAL_LEN:
        per_seq = tl.cdiv(T, C)
        i_n = i_c // per_seq
        t0 = i_n * T + (i_c % per_seq) * C
        t1 = tl.minimum(t0 + C, i_n * T + T)
    else:
        t0 = tl.load(chunk_bounds + 2 * i_c).to(tl.int64)
        t1 = tl.load(chunk_bounds + 2 * i_c + 1).to(tl.int64)
    o_t = tl.arange(0, C)
    o_n = tl.arange(0, N)
    o_v = tl.arange(0, V)
    m_t = (t0 + o_t) < t1
    off_k = (t0 + o_t)[:, None] * H * N + i_h * N + o_n[None, :]
    off_v = (t0 + o_t)[:, None] * H * V + i_h * V + o_v[None, :]
    mk = m_t[:, None]

    row = o_t[:, None]
    col = o_t[None, :]
    off_c = (t0 + o_t)[:, None] * H * C + i_h * C + o_t[None, :]
    # ordered so each loaded tile dies early (register pressure): decays, then b/k/r, then a
    b_w = tl.load(w + off_k, mask=mk, other=0.0).to(tl.float32)
    G = tl.cumsum(b_w, axis=0)
    G_last = tl.sum(b_w, axis=0)  # padded rows have w = 0
    G_excl = G - b_w
    b_b = tl.load(b + off_k, mask=mk, other=0.0).to(tl.float32)
    tl.store(Bb + off_k, (b_b * tl.exp(G_last[None, :] - G)).to(Bb.dtype.element_ty), mask=mk)
    B_h = b_b * tl.exp(-G)
    b_k = tl.load(k + off_k, mask=mk, other=0.0).to(tl.float32)
    tl.store(Kb + off_k, (b_k * tl.exp(G_last[None, :] - G)).to(Kb.dtype.element_ty), mask=mk)
    K_h = b_k * tl.exp(-G)
    R_t = tl.load(r + off_k, mask=mk, other=0.0).to(tl.float32) * tl.exp(G)
    tl.store(Rt + off_k, R_t.to(Rt.dtype.element_ty), mask=mk)
    M_rb = tl.where(row >= col, tl.dot(R_t, tl.trans(B_h), input_precision=PREC), 0.0)
    tl.store(Mrb + off_c, M_rb.to(Mrb.dtype.element_ty), mask=mk)
    M_rk = tl.where(row >= col, tl.dot(R_t, tl.trans(K_h), input_precision=PREC), 0.0)
    tl.store(Mrk + off_c, M_rk.to(Mrk.dtype.element_ty), mask=mk)
    A_t = tl.load(a + off_k, mask=mk, other=0.0).to(tl.float32) * tl.exp(G_excl)
    L_ab = tl.where(row > col, tl.dot(A_t, tl.trans(B_h), input_precision=PREC), 0.0)
    L_ak = tl.where(row > col, tl.dot(A_t, tl.trans(K_h), input_precision=PREC), 0.0)

    # (I - L)^-1 = prod_i (I + L^(2^i)); Tm accumulates sum_{j < 2^i} L^j
    Tm = tl.where(row == col, 1.0, 0.0) + L_ab
    P = L_ab
    for _ in tl.static_range(LOG2C - 1):
        P = tl.dot(P, P, input_precision=PREC)
        Tm = Tm + tl.dot(Tm, P, input_precision=PREC)

    tl.store(W_ + off_k, tl.dot(Tm, A_t, input_precision=PREC).to(W_.dtype.element_ty), mask=mk)
    b_v = tl.load(v + off_v, mask=mk, other=0.0).to(tl.float32)
    b_U0 = tl.dot(Tm, tl.dot(L_ak, b_v, input_precision=PREC), input_precision=PREC)
    tl.store(U0 + off_v, b_U0.to(U0.dtype.element_ty), mask=mk)
    tl.store(gamma + i_c * H * N + i_h * N + o_n, tl.exp(G_last))


@triton.jit
def _chunk_scan(
    v, y,  # [T_total, H, V]
    W_, U0, Rt, Bb, Kb, Mrb, Mrk, gamma,  # from _chunk_prepare
    state_pool,  # [P, H, V, N] fp32
    slots,  # [num_seqs]
    cu_seqlens,  # [num_seqs + 1] (ragged batches)
    chunk_offsets,  # [num_seqs + 1]: index of each sequence's first chunk (ragged batches)
    T,  # tokens per sequence (equal-length batches)
    H: tl.constexpr,
    N: tl.constexpr,
    V: tl.constexpr,
    BV: tl.constexpr,
    C: tl.constexpr,
    PREC: tl.constexpr,
    EQUAL_LEN: tl.constexpr,
):
    i_nh = tl.program_id(0).to(tl.int64)
    i_v = tl.program_id(1)
    i_n, i_h = i_nh // H, i_nh % H
    if EQUAL_LEN:
        bos = i_n * T
        eos = bos + T
        c0 = i_n * tl.cdiv(T, C)
    else:
        bos = tl.load(cu_seqlens + i_n).to(tl.int64)
        eos = tl.load(cu_seqlens + i_n + 1).to(tl.int64)
        c0 = tl.load(chunk_offsets + i_n).to(tl.int64)
    slot = tl.load(slots + i_n).to(tl.int64)

    o_t = tl.arange(0, C)
    o_n = tl.arange(0, N)
    o_v = i_v * BV + tl.arange(0, BV)
    # S^T tile [N, BV] (keys x value rows) read from the pool's [V, N] layout
    p_s = state_pool + tl.maximum(slot, 0) * H * V * N + i_h * V * N + o_v[None, :] * N + o_n[:, None]
    # a full-shape mask built by comparison (the interpreter rejects scalar-and-tensor masks)
    m_s = (tl.zeros([N, BV], dtype=tl.int64) + slot) >= 0
    s = tl.load(p_s, mask=m_s, other=0.0)

    n_chunks = tl.cdiv(eos - bos, C)
    for j in range(0, n_chunks):
        t0 = bos + j * C
        m_t = (t0 + o_t) < eos
        mk = m_t[:, None]
        off_k = (t0 + o_t)[:, None] * H * N + i_h * N + o_n[None, :]
        off_v = (t0 + o_t)[:, None] * H * V + i_h * V + o_v[None, :]
        off_c = (t0 + o_t)[:, None] * H * C + i_h * C + o_t[None, :]
        b_W = tl.load(W_ + off_k, mask=mk, other=0.0).to(tl.float32)
        b_R = tl.load(Rt + off_k, mask=mk, other=0.0).to(tl.float32)
        b_U = tl.dot(b_W, s, input_precision=PREC) + tl.load(U0 + off_v, mask=mk, other=0.0).to(tl.float32)
        b_v = tl.load(v + off_v, mask=mk, other=0.0).to(tl.float32)
        b_y = tl.dot(b_R, s, input_precision=PREC)
        b_y += tl.dot(tl.load(Mrb + off_c, mask=mk, other=0.0).to(tl.float32), b_U, input_precision=PREC)
        b_y += tl.dot(tl.load(Mrk + off_c, mask=mk, other=0.0).to(tl.float32), b_v, input_precision=PREC)
        tl.store(y + off_v, b_y.to(y.dtype.element_ty), mask=mk)
        g = tl.load(gamma + (c0 + j) * H * N + i_h * N + o_n)
        b_B = tl.load(Bb + off_k, mask=mk, other=0.0).to(tl.float32)
        b_K = tl.load(Kb + off_k, mask=mk, other=0.0).to(tl.float32)
        s = g[:, None] * s + tl.dot(tl.trans(b_B), b_U, input_precision=PREC)
        s += tl.dot(tl.trans(b_K), b_v, input_precision=PREC)

    tl.store(p_s, s, mask=m_s)


def chunk_wkv7(
    r: torch.Tensor,
    w: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    state_pool: torch.Tensor,
    slots: torch.Tensor | None = None,
    cu_seqlens: torch.Tensor | None = None,
    *,
    chunk_size: int | None = None,
    scratch_dtype: torch.dtype | None = None,
    block_v: int | None = None,
    num_warps: int | None = None,
) -> torch.Tensor:
    """Same contract as `naive_wkv7` ([B, T, H, N], or [1, T_total, H, N] + cu_seqlens; w is log decay;
    the state pool is updated in place); `chunk_size` is 16, 32 or 64 (default: `default_chunk_size`).
    `scratch_dtype` holds the per-chunk intermediates between the two kernels: by default bf16 for
    16-bit inputs (half the memory traffic; each intermediate rounded to bf16, the precision the
    inputs already have) and fp32 for fp32 inputs; the state and all arithmetic stay fp32."""
    B, T, H, N = r.shape
    V = v.shape[-1]
    n_seq_guess = B if cu_seqlens is None else cu_seqlens.numel() - 1
    C = chunk_size or default_chunk_size(n_seq_guess * H)
    assert C in (16, 32, 64), "chunk_size must be 16, 32 or 64"
    assert N >= 16 and V >= 16 and N & (N - 1) == 0 and V & (V - 1) == 0
    assert state_pool.dtype == torch.float32 and state_pool.is_contiguous()
    assert tuple(state_pool.shape[1:]) == (H, V, N)
    dev = r.device
    if scratch_dtype is None:
        scratch_dtype = torch.float32 if r.dtype == torch.float32 else torch.bfloat16
    equal_len = cu_seqlens is None
    if equal_len:  # chunk positions follow from the program id: no index tensors, no host sync
        n_seq, n_chunks = B, B * triton.cdiv(T, C)
        offsets = chunk_bounds = chunk_offs = r  # placeholders, never read
    else:
        assert B == 1, "with cu_seqlens the inputs must be packed as [1, T_total, H, N]"
        offsets = cu_seqlens.to(dev, torch.int64)
        n_seq = offsets.numel() - 1
        chunk_bounds, chunk_offs, n_chunks = _chunk_layout(offsets, C)
    y = torch.empty_like(v)
    if n_chunks == 0:
        return y
    if slots is None:
        slots = _tune.identity_slots(n_seq, dev)
    r, w, k, v, a, b = (x.contiguous() for x in (r, w, k, v, a, b))
    T_total = B * T
    scratch = dict(device=dev, dtype=scratch_dtype)
    W_, Rt, Bb, Kb = (torch.empty(T_total, H, N, **scratch) for _ in range(4))
    U0 = torch.empty(T_total, H, V, **scratch)
    Mrb, Mrk = (torch.empty(T_total, H, C, **scratch) for _ in range(2))
    gamma = torch.empty(n_chunks, H, N, device=dev, dtype=torch.float32)
    # fp32 inputs get full-precision matmuls; bf16/fp16 inputs accept tf32
    prec = "ieee" if r.dtype == torch.float32 else "tf32"

    def prepare(cfg: tuple[int, int]) -> None:
        _chunk_prepare[(n_chunks, H)](
            r, w, k, v, a, b, W_, U0, Rt, Bb, Kb, Mrb, Mrk, gamma, chunk_bounds, T,
            H=H, N=N, V=V, C=C, LOG2C=C.bit_length() - 1, PREC=prec, EQUAL_LEN=equal_len,
            num_warps=cfg[0], num_stages=cfg[1],
        )

    prep_cfgs = [(8, 1), (4, 1)] if C <= 32 else [(8, 1), (16, 1)]  # (warps, stages)
    prepare(_tune.pick(("prepare", H, N, V, C, prec, equal_len, scratch_dtype), prep_cfgs, prepare, dev))

    def scan(cfg: tuple[int, int, int]) -> None:
        bv, nw, ns = cfg
        _chunk_scan[(n_seq * H, triton.cdiv(V, bv))](
            v, y, W_, U0, Rt, Bb, Kb, Mrb, Mrk, gamma, state_pool, slots, offsets, chunk_offs, T,
            H=H, N=N, V=V, BV=bv, C=C, PREC=prec, EQUAL_LEN=equal_len, num_warps=nw, num_stages=ns,
        )

    if block_v is not None or num_warps is not None:
        scan((block_v or V, num_warps or 8, 1))
        return y
    # few (sequence, head) pairs: split value rows across programs to fill the GPU
    wide = n_seq * H >= 256
    # (value rows per program, warps, stages); few candidates: each is a compile on first use
    scan_cfgs = [(min(V, 64) if wide else 16, 8, 1), (16, 4, 1), (32, 4, 1), (64, 8, 1)]
    scan_cfgs = [c for c in dict.fromkeys(scan_cfgs) if c[0] <= V]
    key = ("scan", H, N, V, C, prec, equal_len, scratch_dtype, _tune.bucket(n_seq * H))
    cfg = _tune.pick(key, scan_cfgs, scan, dev, state=state_pool)
    scan(cfg)
    return y


def default_chunk_size(seq_heads: int) -> int:
    """The scan walks each (sequence, head)'s chunks in order: with few of them the walk's latency
    dominates and longer chunks (fewer steps) win; with many the GPU is full and short chunks do
    less work. Measured on an H100 (bench_wkv7): B1 x 64 heads, T 16k -> 64; B8 x 32 heads -> 16."""
    return 16 if seq_heads >= 256 else 32 if seq_heads >= 128 else 64


def _chunk_layout(offsets: torch.Tensor, C: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Chunks of a ragged batch never cross a sequence boundary. Returns ([num_chunks, 2] first and
    end token of each chunk, [num_seqs + 1] first chunk of each sequence, num_chunks); reads the
    chunk count once from the device (a prefill can afford one sync)."""
    dev = offsets.device
    n_seq = offsets.numel() - 1
    lens_chunks = (offsets[1:] - offsets[:-1] + C - 1) // C
    total = int(lens_chunks.sum())
    chunk_offs = torch.zeros(n_seq + 1, device=dev, dtype=torch.int64)
    chunk_offs[1:] = lens_chunks.cumsum(0)
    seq = torch.repeat_interleave(torch.arange(n_seq, device=dev), lens_chunks, output_size=total)
    start = offsets[seq] + (torch.arange(total, device=dev) - chunk_offs[seq]) * C
    end = torch.minimum(start + C, offsets[seq + 1])
    return torch.stack([start, end], 1).to(torch.int32).contiguous(), chunk_offs.to(torch.int32), total
