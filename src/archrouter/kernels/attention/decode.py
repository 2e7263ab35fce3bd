"""Flash-decoding over a paged KV cache in Triton: one new query per sequence.

The cache is a pool of fixed-size blocks, k_cache/v_cache [num_blocks, block_size, Hkv, D];
sequence b's token t lives in block block_tables[b, t // block_size], slot t % block_size.

Decode reads every cached key and value once and does little arithmetic on them, so it is
bound by memory bandwidth, and a batch of a few long sequences gives too few (batch, kv head)
programs to keep every SM's loads in flight. So the context is split: program (b, kv head,
split) runs an online softmax over its share of the context for all the query heads that
share that kv head (GQA: K/V are read once per group, not once per query head), and writes
a partial output plus its log-sum-exp; a second small kernel merges the splits. With one
split the first kernel writes the output directly.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from archrouter.kernels._dispatch import interpreting
from archrouter.kernels.attention._common import autotune, dot_flags, mma, next_pow2, num_sms

LOG2E = 1.4426950408889634
SPLIT_ALIGN = 128  # split boundaries fall on multiples of this (>= every BLOCK_N tried)
MIN_SPLIT_TOKENS = 256  # below this a split's fixed cost outweighs the parallelism it adds
MAX_SPLITS = 64


@triton.jit
def _paged_decode_kernel(
    Q, K_CACHE, V_CACHE, BLOCK_TABLES, CONTEXT_LENS, O, O_PART, LSE_PART,
    stride_qb, stride_qh,
    stride_kn, stride_kt, stride_kh,
    stride_vn, stride_vt, stride_vh,
    stride_btb,
    stride_ob, stride_oh,
    stride_pb, stride_ph, stride_ps,
    stride_lb, stride_lh,
    qk_scale,
    split_tokens,
    tune_key,  # autotune key only: bucketed batch x splits
    GROUP: tl.constexpr,
    GROUP_PAD: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    PAGE: tl.constexpr,
    ONE_SPLIT: tl.constexpr,
    PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
    BLOCK_N: tl.constexpr,
):  # fmt: skip
    b = tl.program_id(0)
    kh = tl.program_id(1)
    s = tl.program_id(2)
    ctx = tl.load(CONTEXT_LENS + b)
    lo = s * split_tokens
    hi = tl.minimum(ctx, lo + split_tokens)

    offs_g = tl.arange(0, GROUP_PAD)
    offs_d = tl.arange(0, HEAD_DIM)
    offs_n = tl.arange(0, BLOCK_N)
    heads = kh * GROUP + offs_g
    in_group = offs_g < GROUP
    q = tl.load(Q + b.to(tl.int64) * stride_qb + heads[:, None] * stride_qh + offs_d[None, :],
                mask=in_group[:, None], other=0.0)  # fmt: skip

    m_i = tl.full([GROUP_PAD], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([GROUP_PAD], dtype=tl.float32)
    acc = tl.zeros([GROUP_PAD, HEAD_DIM], dtype=tl.float32)
    table = BLOCK_TABLES + b.to(tl.int64) * stride_btb
    for start in range(lo, hi, BLOCK_N):
        toks = start + offs_n
        valid = toks < hi
        blk = tl.load(table + toks // PAGE, mask=valid, other=0).to(tl.int64)
        slot = toks % PAGE
        k = tl.load(K_CACHE + blk[:, None] * stride_kn + kh * stride_kh + slot[:, None] * stride_kt
                    + offs_d[None, :], mask=valid[:, None], other=0.0)  # fmt: skip
        qk = mma(q, tl.trans(k), PRECISION, UPCAST) * qk_scale
        qk = tl.where(valid[None, :], qk, float("-inf"))
        # the first tile of a non-empty split holds a valid token, so m_new is finite
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        p = tl.math.exp2(qk - m_new[:, None])
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(V_CACHE + blk[:, None] * stride_vn + kh * stride_vh + slot[:, None] * stride_vt
                    + offs_d[None, :], mask=valid[:, None], other=0.0)  # fmt: skip
        acc = acc * alpha[:, None] + mma(p.to(v.dtype), v, PRECISION, UPCAST)
        m_i = m_new

    safe_l = tl.where(l_i == 0.0, 1.0, l_i)  # an empty split (past the context) gives zeros
    out = acc / safe_l[:, None]
    if ONE_SPLIT:
        tl.store(O + b.to(tl.int64) * stride_ob + heads[:, None] * stride_oh + offs_d[None, :],
                 out.to(O.dtype.element_ty), mask=in_group[:, None])  # fmt: skip
    else:
        tl.store(O_PART + b.to(tl.int64) * stride_pb + heads[:, None] * stride_ph + s * stride_ps
                 + offs_d[None, :], out, mask=in_group[:, None])  # fmt: skip
        lse = tl.where(l_i == 0.0, float("-inf"), m_i + tl.math.log2(safe_l))  # log2 domain
        tl.store(LSE_PART + b.to(tl.int64) * stride_lb + heads * stride_lh + s, lse, mask=in_group)


@triton.jit
def _merge_splits_kernel(
    O, O_PART, LSE_PART,
    stride_ob, stride_oh,
    stride_pb, stride_ph, stride_ps,
    stride_lb, stride_lh,
    num_splits,
    SPLITS_PAD: tl.constexpr,
    HEAD_DIM: tl.constexpr,
):  # fmt: skip
    b = tl.program_id(0)
    h = tl.program_id(1)
    offs_s = tl.arange(0, SPLITS_PAD)
    offs_d = tl.arange(0, HEAD_DIM)
    in_s = offs_s < num_splits
    lse = tl.load(LSE_PART + b.to(tl.int64) * stride_lb + h * stride_lh + offs_s, mask=in_s,
                  other=float("-inf"))  # fmt: skip
    m = tl.max(lse, 0)
    m = tl.where(m == float("-inf"), 0.0, m)  # empty context: every weight is zero
    w = tl.math.exp2(lse - m)
    total = tl.sum(w, 0)
    total = tl.where(total == 0.0, 1.0, total)
    parts = tl.load(O_PART + b.to(tl.int64) * stride_pb + h * stride_ph + offs_s[:, None] * stride_ps
                    + offs_d[None, :], mask=in_s[:, None], other=0.0)  # fmt: skip
    out = tl.sum(parts * w[:, None], 0) / total
    tl.store(O + b.to(tl.int64) * stride_ob + h * stride_oh + offs_d, out.to(O.dtype.element_ty))


_CONFIGS = [
    triton.Config({"BLOCK_N": bn}, num_warps=w, num_stages=s)
    for bn, w, s in [(32, 4, 3), (64, 4, 2), (64, 4, 3), (128, 4, 2), (128, 8, 3)]
]
_paged_decode_tuned = autotune(_CONFIGS, ["tune_key", "HEAD_DIM", "GROUP_PAD", "PAGE", "ONE_SPLIT"])(
    _paged_decode_kernel
)
INTERPRET_BLOCK_N = 16


def choose_splits(batch: int, kv_heads: int, max_context_len: int, device: torch.device) -> int:
    """How many context splits fill the GPU: about four programs per SM (each keeps a few tiles of
    loads in flight; a memory-bound kernel needs many in flight per SM), none shorter than 256 tokens."""
    want = triton.cdiv(4 * num_sms(device), max(batch * kv_heads, 1))
    cap = max(1, triton.cdiv(max_context_len, MIN_SPLIT_TOKENS))
    return max(1, min(want, cap, MAX_SPLITS))


def paged_decode(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    *,
    scale: float | None = None,
    max_context_len: int | None = None,
    num_splits: int | None = None,
    block_n: int | None = None,
) -> torch.Tensor:
    """q [B, Hq, D] over the paged cache -> [B, Hq, D].

    block_tables [B, max_blocks] int32, context_lens [B] int32. `max_context_len` (a bound on
    context_lens, known to the scheduler) sizes the split; it defaults to the block table's width.
    """
    bsz, n_heads_q, d = q.shape
    n_blocks, page, n_heads_kv, _ = k_cache.shape
    del n_blocks
    if n_heads_q % n_heads_kv:
        raise ValueError(f"query heads {n_heads_q} not a multiple of kv heads {n_heads_kv}")
    if q.stride(-1) != 1 or k_cache.stride(-1) != 1 or v_cache.stride(-1) != 1:
        raise ValueError("paged_decode needs the head dim contiguous (stride 1)")
    o = torch.empty_like(q)
    if bsz == 0:
        return o
    scale = scale if scale is not None else 1.0 / math.sqrt(d)
    group = n_heads_q // n_heads_kv
    max_ctx = max_context_len if max_context_len is not None else block_tables.shape[1] * page
    if num_splits is None:
        num_splits = choose_splits(bsz, n_heads_kv, max_ctx, q.device)
    split_tokens = triton.cdiv(triton.cdiv(max(max_ctx, 1), num_splits), SPLIT_ALIGN) * SPLIT_ALIGN
    num_splits = max(1, triton.cdiv(max_ctx, split_tokens))
    one = num_splits == 1
    if one:
        o_part = lse_part = o  # unused by the kernel
        p_strides, l_strides = (0, 0, 0), (0, 0)
    else:
        o_part = torch.empty(bsz, n_heads_q, num_splits, d, dtype=torch.float32, device=q.device)
        lse_part = torch.empty(bsz, n_heads_q, num_splits, dtype=torch.float32, device=q.device)
        p_strides, l_strides = o_part.stride()[:3], lse_part.stride()[:2]
    bt = block_tables if block_tables.dtype == torch.int32 else block_tables.to(torch.int32)
    cl = context_lens if context_lens.dtype == torch.int32 else context_lens.to(torch.int32)
    args = (q, k_cache, v_cache, bt, cl, o, o_part, lse_part,
            q.stride(0), q.stride(1), *k_cache.stride()[:3], *v_cache.stride()[:3], bt.stride(0),
            o.stride(0), o.stride(1), *p_strides, *l_strides, scale * LOG2E, split_tokens,
            next_pow2(bsz) * 1024 + min(next_pow2(split_tokens // SPLIT_ALIGN), 512))  # fmt: skip
    consts = dict(GROUP=group, GROUP_PAD=max(16, next_pow2(group)), HEAD_DIM=d, PAGE=page, ONE_SPLIT=one,
                  **dot_flags(q.dtype))  # fmt: skip
    grid = (bsz, n_heads_kv, num_splits)
    if block_n is None and interpreting():
        block_n = INTERPRET_BLOCK_N
    if block_n is not None:
        _paged_decode_kernel[grid](*args, **consts, BLOCK_N=block_n)
    else:
        _paged_decode_tuned[grid](*args, **consts)
    if not one:
        _merge_splits_kernel[(bsz, n_heads_q)](
            o, o_part, lse_part, o.stride(0), o.stride(1), *p_strides, *l_strides, num_splits,
            SPLITS_PAD=next_pow2(num_splits), HEAD_DIM=d,
        )  # fmt: skip
    return o


def decode_contiguous(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    k_lens: torch.Tensor,
    max_len: int,
    *,
    scale: float | None = None,
    page: int = 16,
) -> torch.Tensor:
    """`paged_decode` over a contiguous cache k/v [B, Hkv, Tcap, D] without copying it.

    Each row's per-head plane [Tcap, D] is cut into `page`-token blocks of one strided view
    [n_blocks, page, Hkv, D] (block stride page*D, head stride Tcap*D): row b's j-th block is block
    b*Hkv*Tcap/page + j, and head h of it lies h*Tcap*D further on. Needs Tcap % page == 0.
    """
    bsz, hkv, cap, d = k.shape
    if cap % page or not (k.is_contiguous() and v.is_contiguous()):
        raise ValueError(f"decode_contiguous needs contiguous k/v with Tcap % {page} == 0 (Tcap {cap})")
    per_row = cap // page
    n_blocks = bsz * hkv * per_row - (hkv - 1) * per_row  # so the view ends where the storage does
    views = [torch.as_strided(t, (n_blocks, page, hkv, d), (page * d, d, cap * d, 1)) for t in (k, v)]
    rows = torch.arange(bsz, device=q.device, dtype=torch.int32)[:, None] * (hkv * per_row)
    tables = rows + torch.arange(per_row, device=q.device, dtype=torch.int32)
    return paged_decode(q, views[0], views[1], tables, k_lens, scale=scale, max_context_len=max_len)
