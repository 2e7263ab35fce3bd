"""Chunked WKV-7 prefill in Triton (the WY form of the generalized delta rule), in three passes.

Per head, with the state kept transposed (S^T: keys x value rows) and, within a chunk of C tokens,
the cumulative log decay G_t (inclusive) and G_{t-1} (exclusive), write u_t = S_{t-1} a_t and
A~ = a exp(G_excl), B^ = b exp(-G), K^ = k exp(-G), R~ = r exp(G). Unrolling naive.py's recurrence:

    U   = (I - L_ab)^-1 (A~ S0^T + L_ak V) = W S0^T + U0,      L_ab = tril_strict(A~ B^^T), L_ak likewise
    Y   = R~ S0^T + M_rb U + M_rk V,                          M_rb = tril(R~ B^^T), M_rk likewise
    S^T = diag(g) S0^T + diag(g) (B^^T U + K^^T V),           g = exp(G_C), the chunk's total decay

which folds into two affine maps of the chunk-start state, everything else independent of it:

    Y   = Q S0^T + Y0          Q = R~ + M_rb W,             Y0 = M_rb U0 + M_rk V
    S^T = (diag(g) + M) S0^T + E,  M = diag(g) B^^T W,      E = diag(g) (B^^T U0 + K^^T V)

1. `_chunk_prepare`, every chunk of every sequence in parallel: Q, Y0 (per token), M, E, g (per chunk).
   The chunk is walked in sub-blocks of 16 tokens, the triangular solve as blockwise forward
   substitution: the earlier sub-blocks enter only through two running state-sized sums (B^^T W and
   B^^T U0 + K^^T V so far), and each 16 x 16 diagonal block is inverted by the product form
   (I - L)^-1 = prod_i (I + L^(2^i)). Matmul work per token at C = 64 is ~1.5x that of C = 16
   (a single 64 x 64 inverse would make it ~8x).
2. `_chunk_state`, the only sequential pass: per (sequence, head, block of value rows) it walks the
   chunks in order, S^T <- g S^T + M S^T + E (one [N, N] x [N, BV] matmul a chunk), storing each
   chunk's start state and writing the final state to the pool.
3. `_chunk_output`, every chunk in parallel again: Y = Q S0^T + Y0.

A single long sequence therefore has only the light recurrence of pass 2 in series (T / C steps);
with C = 64 the per-chunk [N, N] / [N, V] intermediates are the size of one [T, N] tensor each.

Range: exp(-G) grows with the chunk's accumulated decay; in fp32 (and bf16, the same exponent range)
this is safe while C * max|w| < ~80 (RWKV-7's log decay is >= -exp(-0.5) = -0.607, so C <= 64 is safe).
Precision: fp32 inputs take fp32 matmuls throughout, 16-bit inputs tf32 (bf16 operands optional).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from archrouter.kernels.wkv7 import _tune

BC = 16  # sub-block of a chunk: the smallest matmul side tl.dot takes


@triton.jit
def _op(x, BF16: tl.constexpr):
    """A matmul operand: 0 leaves it fp32; 1 makes it bf16 (tensor-core rate, fp32 accumulation);
    2 rounds it to bf16 and back, the same numbers for the interpreter, whose dot reads bf16 as raw bits."""
    if BF16 == 1:
        return x.to(tl.bfloat16)
    elif BF16 == 2:
        return x.to(tl.bfloat16).to(tl.float32)
    else:
        return x


@triton.jit
def _load_block(r, w, k, v, a, b, t0, t1, i_h, carry, H: tl.constexpr, N: tl.constexpr, V: tl.constexpr,
                BC: tl.constexpr, BF16: tl.constexpr):
    """Rows t0..t0+BC of one head, decay-scaled; `carry` is the log decay accumulated before t0."""
    o_t = t0 + tl.arange(0, BC)
    m = (o_t < t1)[:, None]
    off_k = o_t[:, None] * H * N + i_h * N + tl.arange(0, N)[None, :]
    off_v = o_t[:, None] * H * V + i_h * V + tl.arange(0, V)[None, :]
    b_w = tl.load(w + off_k, mask=m, other=0.0).to(tl.float32)  # padded rows: w = 0, no decay
    G = tl.cumsum(b_w, axis=0) + carry[None, :]
    carry = carry + tl.sum(b_w, axis=0)
    eg = tl.exp(G)
    ieg = tl.exp(-G)
    r_t = tl.load(r + off_k, mask=m, other=0.0).to(tl.float32) * eg
    a_t = tl.load(a + off_k, mask=m, other=0.0).to(tl.float32) * tl.exp(G - b_w)
    b_h = _op(tl.load(b + off_k, mask=m, other=0.0).to(tl.float32) * ieg, BF16)
    k_h = _op(tl.load(k + off_k, mask=m, other=0.0).to(tl.float32) * ieg, BF16)
    b_v = _op(tl.load(v + off_v, mask=m, other=0.0).to(tl.float32), BF16)
    return r_t, a_t, b_h, k_h, b_v, carry


@triton.jit
def _sub_block(r, w, k, v, a, b, Q, Y0, t0, t1, i_h, carry, macc, eacc, H: tl.constexpr, N: tl.constexpr,
               V: tl.constexpr, BC: tl.constexpr, LOG2BC: tl.constexpr, PREC: tl.constexpr, BF16: tl.constexpr,
               FIRST: tl.constexpr):
    """One sub-block of BC tokens: its rows of Q and Y0, and its part of the chunk's state maps.

    The earlier sub-blocks s enter sub-block t only through sums over s of B^_s^T W_s and
    B^_s^T U0_s + K^_s^T V_s (L_ab[t, s] = A~_t . B^_s, and likewise for K^, R~), which are the
    running `macc` [N, N] and `eacc` [N, V]: the forward substitution carries two state-sized tiles
    instead of every earlier sub-block."""
    r_t, a_t, b_h, k_h, b_v, carry = _load_block(r, w, k, v, a, b, t0, t1, i_h, carry, H, N, V, BC, BF16)
    a_o = _op(a_t, BF16)
    r_o = _op(r_t, BF16)
    o = tl.arange(0, BC)
    row = o[:, None]
    col = o[None, :]
    o_t = t0 + o
    m = (o_t < t1)[:, None]
    # the sub-block's own triangle; (I - L)^-1 = prod_i (I + L^(2^i)) for the nilpotent L, tm
    # accumulating sum_{j < 2^i} L^j
    l_ab = tl.where(row > col, tl.dot(a_o, tl.trans(b_h), input_precision=PREC), 0.0)
    m_rb = _op(tl.where(row >= col, tl.dot(r_o, tl.trans(b_h), input_precision=PREC), 0.0), BF16)
    tm = tl.where(row == col, 1.0, 0.0) + l_ab
    p = l_ab
    for _ in tl.static_range(LOG2BC - 1):
        p = tl.dot(p, p, input_precision=PREC)
        tm = tm + tl.dot(tm, p, input_precision=PREC)
    # the W side (W, Q, macc), then the U side (U0, Y0, eacc): in this order each side's tiles die
    # before the other's are made (fused, ptxas sm_90: 249 registers at 8 warps, no spills)
    if FIRST:
        rw = a_t
        q = r_t
    else:
        m_o = _op(macc, BF16)
        rw = tl.dot(a_o, m_o, a_t, input_precision=PREC)
        q = tl.dot(r_o, m_o, r_t, input_precision=PREC)
    w_i = _op(tl.dot(tm, rw, input_precision=PREC), BF16)
    q = tl.dot(m_rb, w_i, q, input_precision=PREC)
    tl.store(Q + o_t[:, None] * H * N + i_h * N + tl.arange(0, N)[None, :], q.to(Q.dtype.element_ty), mask=m)
    macc = tl.dot(tl.trans(b_h), w_i, macc, input_precision=PREC)
    if FIRST:
        ru = tl.zeros([BC, V], dtype=tl.float32)
        y = tl.zeros([BC, V], dtype=tl.float32)
    else:
        e_o = _op(eacc, BF16)
        ru = tl.dot(a_o, e_o, input_precision=PREC)
        y = tl.dot(r_o, e_o, input_precision=PREC)
    l_ak = tl.where(row > col, tl.dot(a_o, tl.trans(k_h), input_precision=PREC), 0.0)
    m_rk = tl.where(row >= col, tl.dot(r_o, tl.trans(k_h), input_precision=PREC), 0.0)
    ru = tl.dot(_op(l_ak, BF16), b_v, ru, input_precision=PREC)
    u_i = _op(tl.dot(tm, ru, input_precision=PREC), BF16)
    y = tl.dot(m_rb, u_i, y, input_precision=PREC)
    y = tl.dot(_op(m_rk, BF16), b_v, y, input_precision=PREC)
    tl.store(Y0 + o_t[:, None] * H * V + i_h * V + tl.arange(0, V)[None, :], y.to(Y0.dtype.element_ty), mask=m)
    eacc = tl.dot(tl.trans(b_h), u_i, eacc, input_precision=PREC)
    eacc = tl.dot(tl.trans(k_h), b_v, eacc, input_precision=PREC)
    return carry, macc, eacc


@triton.jit
def _chunk_prepare(
    r, w, k, v, a, b,  # [T_total, H, N] inputs (v: [T_total, H, V])
    Q, Y0,  # [T_total, H, N] / [T_total, H, V] outputs
    M_, E_,  # [num_chunks, H, N, N] / [num_chunks, H, N, V] outputs
    gamma,  # [num_chunks, H, N] fp32 output: exp(G_C), the chunk's total decay
    chunk_bounds,  # [num_chunks, 2] int32: first token, one past last token (ragged batches)
    T,  # tokens per sequence (equal-length batches)
    H: tl.constexpr,
    N: tl.constexpr,
    V: tl.constexpr,
    C: tl.constexpr,
    BC: tl.constexpr,
    LOG2BC: tl.constexpr,
    PREC: tl.constexpr,
    BF16: tl.constexpr,
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
    carry = tl.zeros([N], dtype=tl.float32)
    macc = tl.zeros([N, N], dtype=tl.float32)
    eacc = tl.zeros([N, V], dtype=tl.float32)
    # the first sub-block peeled (no earlier ones to add), the rest a loop: unrolled, the compiler
    # hoists later sub-blocks' loads and runs out of registers
    carry, macc, eacc = _sub_block(r, w, k, v, a, b, Q, Y0, t0, t1, i_h, carry, macc, eacc,
                                   H, N, V, BC, LOG2BC, PREC, BF16, True)
    for i in range(1, C // BC):
        carry, macc, eacc = _sub_block(r, w, k, v, a, b, Q, Y0, t0 + i * BC, t1, i_h, carry, macc, eacc,
                                       H, N, V, BC, LOG2BC, PREC, BF16, False)
    # B^ and K^ carry exp(-G): scaling by the chunk's total decay g leaves exp(G_C - G) <= 1
    g = tl.exp(carry)
    o_n = tl.arange(0, N)
    p_m = M_ + (i_c * H + i_h) * N * N + o_n[:, None] * N + o_n[None, :]
    tl.store(p_m, (g[:, None] * macc).to(M_.dtype.element_ty))
    p_e = E_ + (i_c * H + i_h) * N * V + o_n[:, None] * V + tl.arange(0, V)[None, :]
    tl.store(p_e, (g[:, None] * eacc).to(E_.dtype.element_ty))
    tl.store(gamma + (i_c * H + i_h) * N + o_n, g)


@triton.jit
def _chunk_state(
    M_, E_, gamma,  # from _chunk_prepare
    h,  # [num_chunks, H, N, V] output: each chunk's start state S0^T
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

    o_n = tl.arange(0, N)
    o_v = i_v * BV + tl.arange(0, BV)
    # S^T tile [N, BV] (keys x value rows) read from the pool's [V, N] layout
    p_s = state_pool + tl.maximum(slot, 0) * H * V * N + i_h * V * N + o_v[None, :] * N + o_n[:, None]
    # a full-shape mask built by comparison (the interpreter rejects scalar-and-tensor masks)
    m_s = (tl.zeros([N, BV], dtype=tl.int64) + slot) >= 0
    s = tl.load(p_s, mask=m_s, other=0.0)

    n_chunks = tl.cdiv(eos - bos, C)
    for j in range(0, n_chunks):
        base = (c0 + j) * H + i_h
        tl.store(h + base * N * V + o_n[:, None] * V + o_v[None, :], s.to(h.dtype.element_ty))
        b_m = tl.load(M_ + base * N * N + o_n[:, None] * N + o_n[None, :]).to(tl.float32)
        b_e = tl.load(E_ + base * N * V + o_n[:, None] * V + o_v[None, :]).to(tl.float32)
        g = tl.load(gamma + base * N + o_n)
        s = g[:, None] * s + tl.dot(b_m, s, input_precision=PREC) + b_e

    tl.store(p_s, s, mask=m_s)


@triton.jit
def _chunk_output(
    Q, Y0, h,  # from the two passes before
    y,  # [T_total, H, V]
    chunk_bounds,  # [num_chunks, 2] int32 (ragged batches)
    T,  # tokens per sequence (equal-length batches)
    H: tl.constexpr,
    N: tl.constexpr,
    V: tl.constexpr,
    BV: tl.constexpr,
    C: tl.constexpr,
    PREC: tl.constexpr,
    UPCAST: tl.constexpr,
    EQUAL_LEN: tl.constexpr,
):
    i_c = tl.program_id(0).to(tl.int64)
    i_h = tl.program_id(1).to(tl.int64)
    i_v = tl.program_id(2)
    if EQUAL_LEN:
        per_seq = tl.cdiv(T, C)
        i_n = i_c // per_seq
        t0 = i_n * T + (i_c % per_seq) * C
        t1 = tl.minimum(t0 + C, i_n * T + T)
    else:
        t0 = tl.load(chunk_bounds + 2 * i_c).to(tl.int64)
        t1 = tl.load(chunk_bounds + 2 * i_c + 1).to(tl.int64)
    o_t = t0 + tl.arange(0, C)
    o_n = tl.arange(0, N)
    o_v = i_v * BV + tl.arange(0, BV)
    m = (o_t < t1)[:, None]
    b_q = tl.load(Q + o_t[:, None] * H * N + i_h * N + o_n[None, :], mask=m, other=0.0)
    b_h = tl.load(h + (i_c * H + i_h) * N * V + o_n[:, None] * V + o_v[None, :])
    if UPCAST:  # the interpreter's dot reads bf16 as raw bits
        b_q = b_q.to(tl.float32)
        b_h = b_h.to(tl.float32)
    off_v = o_t[:, None] * H * V + i_h * V + o_v[None, :]
    acc = tl.load(Y0 + off_v, mask=m, other=0.0).to(tl.float32)
    acc = tl.dot(b_q, b_h, acc, input_precision=PREC)
    tl.store(y + off_v, acc.to(y.dtype.element_ty), mask=m)


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
    bf16_matmuls: bool | None = None,
    lengths: list[int] | None = None,
) -> torch.Tensor:
    """Same contract as `naive_wkv7` ([B, T, H, N], or [1, T_total, H, N] + cu_seqlens; w is log decay;
    the state pool is updated in place); `chunk_size` is 16, 32 or 64 (default: `default_chunk_size`).
    `scratch_dtype` holds the intermediates between the passes (Q, M, E and the per-chunk states; Y0
    is always fp32): by default bf16 for 16-bit inputs (half the memory traffic; each rounded to bf16,
    the precision the inputs already have) and fp32 for fp32 inputs; the carried state stays fp32.
    Matmuls take fp32 operands (tf32 on the GPU for 16-bit inputs, full fp32 for fp32 inputs);
    `bf16_matmuls=True` gives the intra-chunk ones bf16 operands instead (twice the tensor-core rate,
    but ~2.5x the output error of tf32 on RWKV-shaped inputs, measured in the interpreter).
    `block_v` / `num_warps` fix the sequential pass's launch (value rows per program, warps)
    instead of timing candidates. `lengths`: the packed sequences' lengths as the host knows them (the
    chunk layout is then built there: no device read)."""
    B, T, H, N = r.shape
    V = v.shape[-1]
    C = chunk_size or default_chunk_size(T if cu_seqlens is None else None)
    assert C in (16, 32, 64), "chunk_size must be 16, 32 or 64"
    assert N >= 16 and V >= 16 and N & (N - 1) == 0 and V & (V - 1) == 0
    assert state_pool.dtype == torch.float32 and state_pool.is_contiguous()
    assert tuple(state_pool.shape[1:]) == (H, V, N)
    dev = r.device
    half = r.dtype != torch.float32
    if scratch_dtype is None:
        scratch_dtype = torch.bfloat16 if half else torch.float32
    interp = os.environ.get("TRITON_INTERPRET") == "1"
    bf16 = int(bool(bf16_matmuls))
    if bf16 and interp:
        bf16 = 2
    # fp32 inputs get full-precision matmuls; 16-bit inputs accept tf32 where operands stay fp32
    # (bf16 operands ignore it)
    prec = "tf32" if half else "ieee"
    equal_len = cu_seqlens is None
    if equal_len:  # chunk positions follow from the program id: no index tensors, no host sync
        n_seq, n_chunks = B, B * triton.cdiv(T, C)
        offsets = chunk_bounds = chunk_offs = r  # placeholders, never read
    else:
        assert B == 1, "with cu_seqlens the inputs must be packed as [1, T_total, H, N]"
        offsets = cu_seqlens.to(dev, torch.int64)
        n_seq = offsets.numel() - 1
        if lengths is not None:
            chunk_bounds, chunk_offs, n_chunks = _chunk_layout_host(lengths, C, dev)
        else:
            chunk_bounds, chunk_offs, n_chunks = _chunk_layout(offsets, C)
    if slots is None:
        slots = _tune.identity_slots(n_seq, dev)
    y = torch.empty_like(v)
    if n_chunks == 0:
        return y
    r, w, k, v, a, b = (x.contiguous() for x in (r, w, k, v, a, b))
    T_total = B * T
    scratch = dict(device=dev, dtype=scratch_dtype)
    Q = torch.empty(T_total, H, N, **scratch)
    # Y0 is added to the output as is: a bf16 copy would round the output twice (measured: doubles
    # the error against the reference)
    Y0 = torch.empty(T_total, H, V, device=dev, dtype=torch.float32)
    M_ = torch.empty(n_chunks, H, N, N, **scratch)
    E_ = torch.empty(n_chunks, H, N, V, **scratch)
    h = torch.empty(n_chunks, H, N, V, **scratch)
    gamma = torch.empty(n_chunks, H, N, device=dev, dtype=torch.float32)

    def prepare(nw: int) -> None:
        _chunk_prepare[(n_chunks, H)](
            r, w, k, v, a, b, Q, Y0, M_, E_, gamma, chunk_bounds, T,
            H=H, N=N, V=V, C=C, BC=BC, LOG2BC=BC.bit_length() - 1, PREC=prec, BF16=bf16,
            EQUAL_LEN=equal_len, num_warps=nw, num_stages=1,
        )

    # (warps) the pass holds ~250 registers a thread at C >= 32 either way (ptxas, sm_90: the
    # 16-row matmul operands are replicated per warp); 8 warps do not spill, 4 and 16 trade
    # occupancy against spills
    key = ("prepare", H, N, V, C, prec, bf16, equal_len, scratch_dtype)
    prepare(_tune.pick(key, [8, 4, 16], prepare, dev))

    def state(cfg: tuple[int, int, int]) -> None:
        bv, nw, ns = cfg
        _chunk_state[(n_seq * H, triton.cdiv(V, bv))](
            M_, E_, gamma, h, state_pool, slots, offsets, chunk_offs, T,
            H=H, N=N, V=V, BV=bv, C=C, PREC=prec, EQUAL_LEN=equal_len, num_warps=nw, num_stages=ns,
        )

    if block_v is not None or num_warps is not None:
        state((block_v or min(V, 64), num_warps or 4, 2))
    else:
        # few (sequence, head) pairs: split value rows across programs to fill the GPU; 2-3 stages
        # prefetch the next chunk's M and E while this chunk's matmul runs
        wide = n_seq * H >= 256
        cfgs = [(min(V, 64) if wide else 16, 4, 2), (16, 4, 3), (32, 4, 2), (64, 8, 3)]
        cfgs = [c for c in dict.fromkeys(cfgs) if c[0] <= V]
        key = ("state", H, N, V, C, prec, equal_len, scratch_dtype, _tune.bucket(n_seq * H))
        state(_tune.pick(key, cfgs, state, dev, state=state_pool))

    bv_o = min(V, 64)
    upcast = interp and scratch_dtype != torch.float32

    def output(nw: int) -> None:
        _chunk_output[(n_chunks, H, triton.cdiv(V, bv_o))](
            Q, Y0, h, y, chunk_bounds, T,
            H=H, N=N, V=V, BV=bv_o, C=C, PREC=prec, UPCAST=upcast, EQUAL_LEN=equal_len, num_warps=nw,
            num_stages=1,
        )

    output(_tune.pick(("output", H, N, V, C, prec, equal_len, scratch_dtype), [4, 8], output, dev))
    return y


def default_chunk_size(seq_len: int | None = None) -> int:
    """64 unless the sequences are shorter: the sequential pass takes T / C steps and the per-chunk
    state maps cost [N, N] + [N, V] per chunk, both favouring long chunks; the blocked solve keeps the
    intra-chunk work of C = 64 within ~1.6x that of C = 16 per token."""
    if seq_len is None or seq_len > 32:
        return 64
    return 32 if seq_len > 16 else 16


def _chunk_layout_host(lengths: list[int], C: int, dev: torch.device) -> tuple[torch.Tensor, torch.Tensor, int]:
    """`_chunk_layout` from lengths known on the host: built there, one copy to the device, no sync."""
    bounds: list[int] = []
    chunk_offs = [0]
    start = 0
    for n in lengths:
        for lo in range(start, start + n, C):
            bounds += [lo, min(lo + C, start + n)]
        chunk_offs.append(chunk_offs[-1] + -(-n // C))
        start += n
    host = torch.tensor(bounds + chunk_offs, dtype=torch.int32)
    if dev.type == "cuda":
        host = host.pin_memory()
    t = host.to(dev, non_blocking=True)
    total = chunk_offs[-1]
    return t[: 2 * total].view(total, 2), t[2 * total :], total


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
