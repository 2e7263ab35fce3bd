"""CPU paths of the paged-cache attention, on `F.scaled_dot_product_attention`: same signatures as
`naive`, what runs where Triton does not.

`naive` stays the readable yardstick the kernels are tested against (fp32 score matrices, one
sequence at a time); these use PyTorch's fused attention instead, so a Transformer served from the
paged cache on a CPU costs what its contiguous cache costs there: decode is one batched call over
the block tables gathered into a padded buffer, prefill one call per sequence.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


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
    del max_seqlen_q  # a launch-size hint for the kernel only
    out = torch.empty_like(q)
    gqa = q.shape[1] != k.shape[1]
    cq, ck = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()
    for b in range(len(cq) - 1):
        tq, tk = cq[b + 1] - cq[b], ck[b + 1] - ck[b]
        if tq == 0:
            continue
        qb = q[cq[b] : cq[b + 1]].transpose(0, 1)[None]  # [1, Hq, Tq, D]
        kb, vb = (x[ck[b] : ck[b + 1]].transpose(0, 1)[None] for x in (k, v))
        if tk == 0:
            out[cq[b] : cq[b + 1]] = 0  # a query that sees no key gets a zero output, as in `naive`
            continue
        mask = None
        if causal and tq > 1:  # end-aligned: query i sees keys j <= i + tk - tq
            mask = torch.ones(tq, tk, dtype=torch.bool, device=q.device).tril(tk - tq)
        o = F.scaled_dot_product_attention(qb, kb, vb, attn_mask=mask, scale=scale, enable_gqa=gqa)
        out[cq[b] : cq[b + 1]] = o[0].transpose(0, 1)
    return out


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
    lens = context_lens.long()
    width = int(lens.max()) if max_context_len is None else max_context_len
    if width == 0:
        return torch.zeros_like(q)
    bs = k_cache.shape[1]
    pos = torch.arange(width, device=k_cache.device)
    table = block_tables.long()
    rows = table[:, (pos // bs).clamp(max=table.shape[1] - 1)] * bs + pos % bs  # [B, width] flat pool rows
    valid = pos[None] < lens[:, None]
    rows = torch.where(valid, rows, 0)  # padding reads row 0 and is masked out
    flat = rows.flatten()  # index_select: several times faster than advanced indexing on a CPU
    kb = k_cache.flatten(0, 1).index_select(0, flat).view(*rows.shape, *k_cache.shape[2:]).transpose(1, 2)
    vb = v_cache.flatten(0, 1).index_select(0, flat).view(*rows.shape, *v_cache.shape[2:]).transpose(1, 2)
    o = F.scaled_dot_product_attention(q[:, :, None], kb, vb, attn_mask=valid[:, None, None], scale=scale,
                                       enable_gqa=q.shape[1] != k_cache.shape[2])  # fmt: skip
    return torch.where((lens > 0)[:, None, None], o[:, :, 0], 0).to(q.dtype)

