"""Flash-attention forward in Triton: prefill over packed or padded batches.

One program owns BLOCK_M queries of one head of one sequence. It walks the keys in BLOCK_N
tiles with an online softmax (running max m, running sum l, fp32 accumulator), so the T x T
score matrix never exists. Tiles that lie wholly below the causal diagonal skip the mask; only
the few tiles that cross it (and the ragged last tile) pay for it.

The same kernel serves both layouts through per-sequence row offsets and lengths:
- packed (`attention_varlen`): q [total_q, Hq, D], k/v [total_k, Hkv, D] + cumulative offsets;
- padded (`attention_padded`): q [B, Hq, Tq, D] over a KV buffer [B, Hkv, Tcap, D] with
  per-row valid lengths (a second turn's new tokens over the cached first turn).
Causal masking is aligned at the end: query i sees keys j <= i + k_len - q_len.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from archrouter.kernels._dispatch import interpreting
from archrouter.kernels.attention._common import autotune, dot_flags, mma

LOG2E = 1.4426950408889634


@triton.jit
def _attn_fwd_kernel(
    Q, K, V, O,
    Q_START, Q_LEN, K_START, K_LEN,
    stride_qb, stride_qt, stride_qh,
    stride_kb, stride_kt, stride_kh,
    stride_vb, stride_vt, stride_vh,
    stride_ob, stride_ot, stride_oh,
    qk_scale,
    seq_bucket,  # autotune key only: the launch's max query length, bucketed
    GROUP: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    IS_CAUSAL: tl.constexpr,
    PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):  # fmt: skip
    # under a causal mask the last query blocks do the most work: launch them first, so the light
    # ones fill the gaps at the end instead of leaving a tail of heavy programs
    pid_m = tl.num_programs(0) - 1 - tl.program_id(0)
    h = tl.program_id(1)
    b = tl.program_id(2)
    q_len = tl.load(Q_LEN + b)
    start_m = pid_m * BLOCK_M
    if start_m >= q_len:
        return
    k_len = tl.load(K_LEN + b)
    kh = h // GROUP
    q_row0 = tl.load(Q_START + b).to(tl.int64)
    k_row0 = tl.load(K_START + b).to(tl.int64)

    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    q_ptrs = (Q + b.to(tl.int64) * stride_qb + h * stride_qh
              + (q_row0 + offs_m)[:, None] * stride_qt + offs_d[None, :])  # fmt: skip
    q = tl.load(q_ptrs, mask=offs_m[:, None] < q_len, other=0.0)
    k_base = K + b.to(tl.int64) * stride_kb + kh * stride_kh + k_row0 * stride_kt
    v_base = V + b.to(tl.int64) * stride_vb + kh * stride_vh + k_row0 * stride_vt

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)

    diag = k_len - q_len  # keys before the first new token: the cached prefix
    if IS_CAUSAL:
        # keys below every row's diagonal need no mask; the band up to the last row's does
        full_end = tl.minimum(start_m + diag + 1, k_len)
        hi = tl.minimum(start_m + BLOCK_M + diag, k_len)
    else:
        full_end = k_len
        hi = k_len
    full_end = tl.maximum(full_end, 0) // BLOCK_N * BLOCK_N

    for start_n in range(0, full_end, BLOCK_N):
        cols = start_n + offs_n
        k = tl.load(k_base + cols[:, None] * stride_kt + offs_d[None, :])
        qk = mma(q, tl.trans(k), PRECISION, UPCAST) * qk_scale
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        p = tl.math.exp2(qk - m_new[:, None])
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(v_base + cols[:, None] * stride_vt + offs_d[None, :])
        acc = acc * alpha[:, None] + mma(p.to(v.dtype), v, PRECISION, UPCAST)
        m_i = m_new

    for start_n in range(full_end, hi, BLOCK_N):
        cols = start_n + offs_n
        in_k = cols < k_len
        k = tl.load(k_base + cols[:, None] * stride_kt + offs_d[None, :], mask=in_k[:, None], other=0.0)
        qk = mma(q, tl.trans(k), PRECISION, UPCAST) * qk_scale
        valid = in_k[None, :]
        if IS_CAUSAL:
            valid = valid & (cols[None, :] <= offs_m[:, None] + diag)
        qk = tl.where(valid, qk, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # a row that has seen no key yet
        p = tl.math.exp2(qk - m_safe[:, None])
        alpha = tl.math.exp2(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(v_base + cols[:, None] * stride_vt + offs_d[None, :], mask=in_k[:, None], other=0.0)
        acc = acc * alpha[:, None] + mma(p.to(v.dtype), v, PRECISION, UPCAST)
        m_i = m_new

    l_i = tl.where(l_i == 0.0, 1.0, l_i)  # rows with no visible key (k_len < q_len) give zeros
    acc = acc / l_i[:, None]
    o_ptrs = (O + b.to(tl.int64) * stride_ob + h * stride_oh
              + (q_row0 + offs_m)[:, None] * stride_ot + offs_d[None, :])  # fmt: skip
    tl.store(o_ptrs, acc.to(O.dtype.element_ty), mask=offs_m[:, None] < q_len)


_CONFIGS = [
    triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s)
    for bm, bn, w, s in [(64, 64, 4, 3), (128, 64, 4, 3), (128, 64, 8, 3), (128, 128, 8, 3), (128, 32, 4, 4)]
]
_attn_fwd_tuned = autotune(_CONFIGS, ["seq_bucket", "HEAD_DIM", "IS_CAUSAL", "GROUP"])(_attn_fwd_kernel)

# Under TRITON_INTERPRET=1 (tests on CPU) a small fixed tile; autotuning would only cost time.
INTERPRET_BLOCKS = {"BLOCK_M": 16, "BLOCK_N": 16}


def _launch(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, o: torch.Tensor,
    q_start: torch.Tensor, q_len: torch.Tensor, k_start: torch.Tensor, k_len: torch.Tensor,
    strides: tuple[tuple[int, int, int], ...], batch: int, max_q: int,
    causal: bool, scale: float | None, blocks: dict[str, int] | None,
) -> None:  # fmt: skip
    d = q.shape[-1]
    n_heads_q, n_heads_kv = _heads(q, k)
    if n_heads_q % n_heads_kv:
        raise ValueError(f"query heads {n_heads_q} not a multiple of kv heads {n_heads_kv}")
    if d not in (16, 32, 64, 128, 256):
        raise ValueError(f"head dim {d} not supported (16, 32, 64, 128, 256)")
    scale = scale if scale is not None else 1.0 / math.sqrt(d)
    (sqb, sqt, sqh), (skb, skt, skh), (svb, svt, svh), (sob, sot, soh) = strides
    args = (q, k, v, o, q_start, q_len, k_start, k_len, sqb, sqt, sqh, skb, skt, skh, svb, svt, svh,
            sob, sot, soh, scale * LOG2E, _bucket(max_q))  # fmt: skip
    consts = dict(GROUP=n_heads_q // n_heads_kv, HEAD_DIM=d, IS_CAUSAL=causal, **dot_flags(q.dtype))
    if blocks is None and interpreting():
        blocks = INTERPRET_BLOCKS
    if blocks is not None:
        grid = (triton.cdiv(max_q, blocks["BLOCK_M"]), n_heads_q, batch)
        _attn_fwd_kernel[grid](*args, **consts, **blocks)
    else:
        grid = lambda meta: (triton.cdiv(max_q, meta["BLOCK_M"]), n_heads_q, batch)  # noqa: E731
        _attn_fwd_tuned[grid](*args, **consts)


def _heads(q: torch.Tensor, k: torch.Tensor) -> tuple[int, int]:
    # packed tensors are [T, H, D]; padded ones [B, H, T, D]: the head dim is always -2 or 1
    return (q.shape[1], k.shape[1]) if q.dim() == 4 else (q.shape[-2], k.shape[-2])


def _bucket(n: int) -> int:
    return min(triton.next_power_of_2(max(n, 1)), 16384)


def attention_varlen(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    max_seqlen_q: int | None = None,
    *,
    causal: bool = True,
    scale: float | None = None,
    blocks: dict[str, int] | None = None,
) -> torch.Tensor:
    """Packed batch: q [total_q, Hq, D], k/v [total_k, Hkv, D], int32 offsets [B + 1] -> [total_q, Hq, D].

    `max_seqlen_q` sizes the launch; pass it to avoid a device sync (it is read from the offsets
    otherwise). Each sequence needs k_len >= q_len under `causal`.
    """
    _check_last_dim(q, k, v)
    batch = cu_seqlens_q.numel() - 1
    if max_seqlen_q is None:
        max_seqlen_q = int((cu_seqlens_q[1:] - cu_seqlens_q[:-1]).max().item()) if batch else 0
    o = torch.empty_like(q)
    if batch == 0 or q.shape[0] == 0:
        return o
    cq, ck = cu_seqlens_q.to(torch.int32), cu_seqlens_k.to(torch.int32)
    strides = ((0, q.stride(0), q.stride(1)), (0, k.stride(0), k.stride(1)),
               (0, v.stride(0), v.stride(1)), (0, o.stride(0), o.stride(1)))  # fmt: skip
    _launch(q, k, v, o, cq[:-1], cq[1:] - cq[:-1], ck[:-1], ck[1:] - ck[:-1], strides, batch,
            max_seqlen_q, causal, scale, blocks)  # fmt: skip
    return o


def attention_padded(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    k_lens: torch.Tensor,
    q_lens: torch.Tensor | None = None,
    *,
    causal: bool = True,
    scale: float | None = None,
    blocks: dict[str, int] | None = None,
) -> torch.Tensor:
    """Padded batch over a KV buffer: q [B, Hq, Tq, D], k/v [B, Hkv, Tcap, D] -> [B, Hq, Tq, D].

    Row b has q_lens[b] queries (default Tq) and k_lens[b] valid keys; rows past q_lens[b] are zero.
    """
    _check_last_dim(q, k, v)
    bsz, _, tq, _ = q.shape
    o = torch.zeros_like(q) if q_lens is not None else torch.empty_like(q)
    if bsz == 0 or tq == 0:
        return o
    zeros = torch.zeros(bsz, dtype=torch.int32, device=q.device)
    ql = q_lens.to(torch.int32) if q_lens is not None else torch.full_like(zeros, tq)
    strides = tuple((t.stride(0), t.stride(2), t.stride(1)) for t in (q, k, v, o))
    _launch(q, k, v, o, zeros, ql, zeros, k_lens.to(torch.int32), strides, bsz, tq, causal, scale, blocks)
    return o


def _check_last_dim(*ts: torch.Tensor) -> None:
    for t in ts:
        if t.stride(-1) != 1:
            raise ValueError("attention kernels need the head dim contiguous (stride 1)")
