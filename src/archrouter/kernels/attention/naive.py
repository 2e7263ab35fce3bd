"""Plain-PyTorch references for the attention kernels: same signatures, no Triton.

They materialise the full score matrix in fp32, one sequence at a time, so they are slow and
exact: the yardstick the Triton kernels are tested against, and the CPU path.

Conventions shared with the kernels:
- packed variable-length batches: q [total_q, Hq, D], k/v [total_k, Hkv, D], sequence b owns
  rows cu_seqlens[b]:cu_seqlens[b+1];
- grouped-query heads: query head h reads kv head h // (Hq // Hkv);
- causal attention is aligned at the end: with q_len new tokens over k_len keys (a cached
  prefix of k_len - q_len tokens, then the new ones), query i sees keys j <= i + k_len - q_len;
- paged KV cache: k_cache/v_cache [num_blocks, block_size, Hkv, D] (flash-attn's layout); token t
  of sequence b lives in block block_tables[b, t // block_size], slot t % block_size, i.e. at
  flat row block * block_size + slot of the [num_blocks * block_size, Hkv, D] view.
"""

from __future__ import annotations

import math

import torch


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, scale: float) -> torch.Tensor:
    """q [Tq, Hq, D], k/v [Tk, Hkv, D] -> [Tq, Hq, D] in fp32, end-aligned causal mask."""
    tq, hq, _ = q.shape
    tk, hkv, _ = k.shape
    group = hq // hkv
    qf = q.float().transpose(0, 1)  # [Hq, Tq, D]
    kf = k.float().transpose(0, 1).repeat_interleave(group, 0)
    vf = v.float().transpose(0, 1).repeat_interleave(group, 0)
    scores = torch.matmul(qf, kf.transpose(1, 2)) * scale  # [Hq, Tq, Tk]
    if causal:
        rows = torch.arange(tq, device=q.device)[:, None]
        cols = torch.arange(tk, device=q.device)[None, :]
        scores = scores.masked_fill(cols > rows + (tk - tq), float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    probs = torch.nan_to_num(probs, nan=0.0)  # a query that sees no key gets a zero output
    return torch.matmul(probs, vf).transpose(0, 1)


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
    """Attention over a packed batch; returns [total_q, Hq, D] in q's dtype."""
    scale = scale if scale is not None else 1.0 / math.sqrt(q.shape[-1])
    out = torch.empty_like(q)
    cq, ck = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()
    for b in range(len(cq) - 1):
        if cq[b + 1] == cq[b]:
            continue
        o = _attend(q[cq[b] : cq[b + 1]], k[ck[b] : ck[b + 1]], v[ck[b] : ck[b + 1]], causal, scale)
        out[cq[b] : cq[b + 1]] = o.to(q.dtype)
    return out


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
    """Attention over a padded batch with a KV buffer: q [B, Hq, Tq, D], k/v [B, Hkv, Tcap, D].

    Row b has q_lens[b] (default Tq) queries at positions 0.. of q and k_lens[b] valid keys at
    positions 0.. of k; queries past q_lens[b] are left as zeros.
    """
    scale = scale if scale is not None else 1.0 / math.sqrt(q.shape[-1])
    bsz, _, tq, _ = q.shape
    out = torch.zeros_like(q)
    kl = k_lens.tolist()
    ql = q_lens.tolist() if q_lens is not None else [tq] * bsz
    for b in range(bsz):
        if ql[b] == 0:
            continue
        qb = q[b, :, : ql[b]].transpose(0, 1)
        kb = k[b, :, : kl[b]].transpose(0, 1)
        vb = v[b, :, : kl[b]].transpose(0, 1)
        out[b, :, : ql[b]] = _attend(qb, kb, vb, causal, scale).transpose(0, 1).to(q.dtype)
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
    """One query per sequence over a paged cache: q [B, Hq, D] -> [B, Hq, D]."""
    del max_context_len  # a launch-size hint for the kernel only
    scale = scale if scale is not None else 1.0 / math.sqrt(q.shape[-1])
    out = torch.zeros_like(q)
    for b, n in enumerate(context_lens.tolist()):
        if n == 0:
            continue
        kb, vb = gather_paged(k_cache, v_cache, block_tables[b], n)
        out[b] = _attend(q[b][None], kb, vb, causal=False, scale=scale)[0].to(q.dtype)
    return out


def gather_paged(
    k_cache: torch.Tensor, v_cache: torch.Tensor, block_table: torch.Tensor, n: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first n tokens of one sequence as contiguous [n, Hkv, D] keys and values."""
    block_size = k_cache.shape[1]
    pos = torch.arange(n, device=k_cache.device)
    rows = block_table.to(k_cache.device).long()[pos // block_size] * block_size + pos % block_size
    return k_cache.flatten(0, 1)[rows], v_cache.flatten(0, 1)[rows]


def write_paged(
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    slot_mapping: torch.Tensor,
) -> None:
    """Store k/v [N, Hkv, D] at flat slots (block * block_size + offset) of the paged cache, in place."""
    slots = slot_mapping.to(k_cache.device).long()
    k_cache.view(-1, *k_cache.shape[2:]).index_copy_(0, slots, k.to(k_cache.dtype))
    v_cache.view(-1, *v_cache.shape[2:]).index_copy_(0, slots, v.to(v_cache.dtype))


def rope_cos_sin(
    inv_freq: torch.Tensor, max_positions: int, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """The cos/sin table the RoPE kernels read: [max_positions, D] = cos (first D/2) | sin (last D/2)."""
    pos = torch.arange(max_positions, dtype=torch.float32, device=inv_freq.device)
    freqs = torch.outer(pos, inv_freq.float())
    return torch.cat([freqs.cos(), freqs.sin()], dim=-1).to(dtype)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # Llama / HF convention: the two halves of the head dim form the (real, imaginary) pairs.
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).to(x.dtype)


def apply_rope(
    q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor, cos_sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate q [..., Hq, D] and k [..., Hkv, D] by the positions [...] (same leading dims)."""
    half = cos_sin.shape[-1] // 2
    table = cos_sin[positions.long()].float()  # [..., D]
    cos, sin = table[..., None, :half], table[..., None, half:]
    return _rotate(q, cos, sin), _rotate(k, cos, sin)
