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
    rows, valid, lens = _decode_rows(block_tables, context_lens, k_cache.shape[1], max_context_len)
    if rows is None:
        return torch.zeros_like(q)
    flat = rows.flatten()  # index_select: several times faster than advanced indexing on a CPU
    kb = k_cache.flatten(0, 1).index_select(0, flat).view(*rows.shape, *k_cache.shape[2:]).transpose(1, 2)
    vb = v_cache.flatten(0, 1).index_select(0, flat).view(*rows.shape, *v_cache.shape[2:]).transpose(1, 2)
    o = F.scaled_dot_product_attention(q[:, :, None], kb, vb, attn_mask=valid[:, None, None], scale=scale,
                                       enable_gqa=q.shape[1] != k_cache.shape[2])  # fmt: skip
    return torch.where((lens > 0)[:, None, None], o[:, :, 0], 0).to(q.dtype)


# Every layer of one decode step passes the same block-table and length tensors: their flat rows are
# computed once a step (the last step's, held by identity, so a freed tensor's id is never reused here).
_last_rows: tuple | None = None


def _decode_rows(
    block_tables: torch.Tensor, context_lens: torch.Tensor, block_size: int, width: int | None
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor]:
    """Flat pool rows [B, width] of every context token (padding -> row 0), the valid mask, lengths."""
    global _last_rows
    last = _last_rows
    if last is not None and last[0] is block_tables and last[1] is context_lens and last[2] == (block_size, width):
        return last[3]
    lens = context_lens.long()
    width = int(lens.max()) if width is None else width
    if width == 0:
        out = (None, None, lens)
    else:
        pos = torch.arange(width, device=block_tables.device)
        table = block_tables.long()
        rows = table[:, (pos // block_size).clamp(max=table.shape[1] - 1)] * block_size + pos % block_size
        valid = pos[None] < lens[:, None]
        out = (torch.where(valid, rows, 0), valid, lens)
    _last_rows = (block_tables, context_lens, (block_size, width), out)
    return out
