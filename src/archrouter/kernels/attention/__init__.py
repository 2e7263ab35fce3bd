"""Attention kernels: flash-attention prefill, paged flash-decoding, fused RoPE.

Each public function takes the Triton path for CUDA tensors and the plain-PyTorch reference
(`naive`) otherwise; the references have the same signatures. The two the paged KV cache calls
(`attention_varlen`, `paged_decode`) run on `F.scaled_dot_product_attention` off CUDA (`sdpa`),
tested against the reference. Layouts and the causal convention are described in `naive`'s docstring.
"""

from __future__ import annotations

import torch

from archrouter.kernels._dispatch import use_triton
from archrouter.kernels.attention import naive, sdpa
from archrouter.kernels.attention.naive import gather_paged, rope_cos_sin, write_paged

SUPPORTED_HEAD_DIMS = (16, 32, 64, 128, 256)

__all__ = [
    "SUPPORTED_HEAD_DIMS",
    "apply_rope",
    "attention_decode_contiguous",
    "attention_padded",
    "attention_varlen",
    "gather_paged",
    "paged_decode",
    "rope_cos_sin",
    "triton_supported",
    "write_paged",
]


def triton_supported(q: torch.Tensor, *others: torch.Tensor) -> bool:
    """Whether the Triton kernels take these tensors: CUDA, and a head dim they are built for."""
    return use_triton(q, *others) and q.shape[-1] in SUPPORTED_HEAD_DIMS


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
) -> torch.Tensor:
    """Packed variable-length attention: q [total_q, Hq, D], k/v [total_k, Hkv, D] -> [total_q, Hq, D]."""
    if triton_supported(q, k, v):
        from archrouter.kernels.attention import prefill

        return prefill.attention_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, causal=causal,
                                        scale=scale)  # fmt: skip
    return sdpa.attention_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, causal=causal,
                                 scale=scale)  # fmt: skip


def attention_padded(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    k_lens: torch.Tensor,
    q_lens: torch.Tensor | None = None,
    *,
    causal: bool = True,
    scale: float | None = None,
) -> torch.Tensor:
    """Padded batch over a KV buffer: q [B, Hq, Tq, D], k/v [B, Hkv, Tcap, D], k_lens [B] -> like q."""
    if triton_supported(q, k, v):
        from archrouter.kernels.attention import prefill

        return prefill.attention_padded(q, k, v, k_lens, q_lens, causal=causal, scale=scale)
    return naive.attention_padded(q, k, v, k_lens, q_lens, causal=causal, scale=scale)


def paged_decode(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    *,
    scale: float | None = None,
    max_context_len: int | None = None,
) -> torch.Tensor:
    """One query per sequence over a paged cache [num_blocks, block_size, Hkv, D]: q [B, Hq, D] -> like q."""
    if triton_supported(q, k_cache, v_cache):
        from archrouter.kernels.attention import decode

        return decode.paged_decode(q, k_cache, v_cache, block_tables, context_lens, scale=scale,
                                   max_context_len=max_context_len)  # fmt: skip
    return sdpa.paged_decode(q, k_cache, v_cache, block_tables, context_lens, scale=scale,
                             max_context_len=max_context_len)  # fmt: skip


def apply_rope(
    q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor, cos_sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate q [..., Hq, D] and k [..., Hkv, D] by positions [...] with the cos | sin table [max_pos, D]."""
    half = q.shape[-1] // 2
    if use_triton(q, k, cos_sin) and half > 0 and (half & (half - 1)) == 0:
        from archrouter.kernels.attention import rope

        return rope.apply_rope(q, k, positions, cos_sin)
    return naive.apply_rope(q, k, positions, cos_sin)


def attention_decode_contiguous(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    k_lens: torch.Tensor,
    max_len: int,
    *,
    scale: float | None = None,
) -> torch.Tensor:
    """One query per row over a contiguous per-row cache: q [B, Hq, D], k/v [B, Hkv, Tcap, D] (row b's
    first k_lens[b] positions valid, all <= max_len) -> [B, Hq, D].

    On CUDA this is the paged flash-decoding kernel reading the buffer in place (`decode.decode_contiguous`),
    which needs a contiguous buffer with Tcap a multiple of 16; otherwise (and on CPU) the padded path.
    """
    if triton_supported(q, k, v) and k.shape[2] % 16 == 0 and k.is_contiguous() and v.is_contiguous():
        from archrouter.kernels.attention import decode

        return decode.decode_contiguous(q, k, v, k_lens, max_len, scale=scale)
    return attention_padded(q[:, :, None], k, v, k_lens, scale=scale)[:, :, 0]
