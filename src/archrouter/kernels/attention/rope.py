"""Rotary position embedding for q and k in one Triton launch.

Plain PyTorch spends several kernels on RoPE (gather cos/sin, two halves, four products, a
concat) for q and again for k. Here one program per token reads that token's cos/sin row once
and rotates every query and key head of it. Llama's convention: the two halves of the head dim
are the (real, imaginary) parts; the cos/sin table [max_pos, D] is cos | sin (see
`naive.rope_cos_sin`), built by the model from its own inverse frequencies (rope scaling included).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from archrouter.kernels.attention._common import next_pow2


@triton.jit
def _rotate_heads(X, Y, tok, n_heads, stride_xt, stride_xh, stride_yt, stride_yh, cos, sin,
                  HEADS_PAD: tl.constexpr, HALF: tl.constexpr):  # fmt: skip
    offs_h = tl.arange(0, HEADS_PAD)
    offs_d = tl.arange(0, HALF)
    mask = offs_h[:, None] < n_heads
    x_ptrs = X + tok * stride_xt + offs_h[:, None] * stride_xh + offs_d[None, :]
    y_ptrs = Y + tok * stride_yt + offs_h[:, None] * stride_yh + offs_d[None, :]
    x1 = tl.load(x_ptrs, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(x_ptrs + HALF, mask=mask, other=0.0).to(tl.float32)
    tl.store(y_ptrs, (x1 * cos - x2 * sin).to(Y.dtype.element_ty), mask=mask)
    tl.store(y_ptrs + HALF, (x2 * cos + x1 * sin).to(Y.dtype.element_ty), mask=mask)


@triton.jit
def _rope_kernel(
    Q, K, QO, KO, POS, COS_SIN,
    n_heads_q, n_heads_k,
    stride_qt, stride_qh, stride_kt, stride_kh,
    stride_qot, stride_qoh, stride_kot, stride_koh,
    stride_cs,
    HQ_PAD: tl.constexpr,
    HK_PAD: tl.constexpr,
    HALF: tl.constexpr,
):  # fmt: skip
    tok = tl.program_id(0).to(tl.int64)
    pos = tl.load(POS + tok).to(tl.int64)
    offs_d = tl.arange(0, HALF)
    cos = tl.load(COS_SIN + pos * stride_cs + offs_d).to(tl.float32)[None, :]
    sin = tl.load(COS_SIN + pos * stride_cs + HALF + offs_d).to(tl.float32)[None, :]
    _rotate_heads(Q, QO, tok, n_heads_q, stride_qt, stride_qh, stride_qot, stride_qoh, cos, sin, HQ_PAD, HALF)
    _rotate_heads(K, KO, tok, n_heads_k, stride_kt, stride_kh, stride_kot, stride_koh, cos, sin, HK_PAD, HALF)


def _tokens_heads(x: torch.Tensor) -> torch.Tensor:
    """[..., H, D] -> [N, H, D] without copying where the leading dims allow it."""
    return x.reshape(-1, x.shape[-2], x.shape[-1])


def apply_rope(
    q: torch.Tensor,
    k: torch.Tensor,
    positions: torch.Tensor,
    cos_sin: torch.Tensor,
    *,
    inplace: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate q [..., Hq, D] and k [..., Hkv, D] by positions [...]; returns (q, k) rotated.

    `inplace=True` writes into q and k (they must then be views the flattening keeps).
    """
    d = q.shape[-1]
    if d % 2 or (d // 2) & (d // 2 - 1):
        raise ValueError(f"head dim {d}: RoPE kernel needs D/2 a power of two")
    q3, k3 = _tokens_heads(q), _tokens_heads(k)
    pos = positions.reshape(-1)
    n = q3.shape[0]
    if k3.shape[0] != n or pos.numel() != n:
        raise ValueError("q, k and positions must have the same leading dims")
    if q3.stride(-1) != 1 or k3.stride(-1) != 1 or cos_sin.stride(-1) != 1:
        raise ValueError("apply_rope needs the head dim contiguous (stride 1)")
    if inplace:
        if q3.data_ptr() != q.data_ptr() or k3.data_ptr() != k.data_ptr():
            raise ValueError("inplace RoPE needs q and k flattenable without a copy")
        qo, ko = q3, k3
    else:
        qo, ko = torch.empty_like(q3), torch.empty_like(k3)
    if n:
        _rope_kernel[(n,)](
            q3, k3, qo, ko, pos, cos_sin, q3.shape[1], k3.shape[1],
            q3.stride(0), q3.stride(1), k3.stride(0), k3.stride(1),
            qo.stride(0), qo.stride(1), ko.stride(0), ko.stride(1), cos_sin.stride(0),
            HQ_PAD=next_pow2(q3.shape[1]), HK_PAD=next_pow2(k3.shape[1]), HALF=d // 2,
        )  # fmt: skip
    if inplace:
        return q, k
    return qo.view(q.shape), ko.view(k.shape)
