"""Differentiable mLSTM for training: `mlstm_chunkwise_naive`'s math on dense [batch, T] batches.

The Triton kernels are forward-only and the reference loops over each packed sequence; training
batches are equal-length, so the chunkwise form here is vectorised over batch x heads and autograd
differentiates it (a few batched matmuls per chunk). fp32 inside, also under bf16 autocast: the
exponential gates and their stabiliser need it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def mlstm_chunkwise_dense(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    i: torch.Tensor,
    f: torch.Tensor,
    C: torch.Tensor,
    n: torch.Tensor,
    m: torch.Tensor,
    *,
    scale: float | None = None,
    eps: float = 1e-6,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k [B, T, H, K]; v [B, T, H, V]; i, f [B, T, H]; initial state C [B, H, K, V], n [B, H, K],
    m [B, H]. Returns h [B, T, H, V] (q's dtype) and the final (C, n, m) in fp32."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    T = q.shape[1]
    out = []
    with torch.autocast(q.device.type, enabled=False):
        # copies: callers write the final state back into these pools, which autograd must not see
        Ck, nk, mk = C.float().clone(), n.float().clone(), m.float().clone()
        qa, ka, va = (x.float().transpose(1, 2) for x in (q, k, v))  # (B, H, T, *)
        ia = i.float().transpose(1, 2)  # (B, H, T)
        la = F.logsigmoid(f.float().transpose(1, 2))
        for t0 in range(0, T, chunk_size):
            t1 = min(t0 + chunk_size, T)
            L = t1 - t0
            qc, kc, vc, ic = qa[:, :, t0:t1], ka[:, :, t0:t1], va[:, :, t0:t1], ia[:, :, t0:t1]
            b = la[:, :, t0:t1].cumsum(-1)  # (B, H, L)
            causal = torch.ones(L, L, dtype=torch.bool, device=q.device).tril()
            logD = (b[..., :, None] - b[..., None, :] + ic[..., None, :]).masked_fill(~causal, float("-inf"))
            m_inter = b + mk[..., None]
            m_row = torch.maximum(m_inter, logD.amax(-1))  # the recurrent m_t
            Sg = (qc @ kc.transpose(-1, -2)) * scale * torch.exp(logD - m_row[..., None])
            inter = torch.exp(m_inter - m_row) * scale  # (B, H, L)
            num = inter[..., None] * (qc @ Ck) + Sg @ vc
            den = inter * (qc @ nk[..., None]).squeeze(-1) + Sg.sum(-1)
            out.append(num / (torch.maximum(den.abs(), torch.exp(-m_row)) + eps)[..., None])
            # carry the state to the chunk end
            b_last = b[..., -1]
            a = b_last[..., None] - b + ic  # (B, H, L)
            m_next = torch.maximum(b_last + mk, a.amax(-1))
            kw = kc * torch.exp(a - m_next[..., None])[..., None]
            decay = torch.exp(b_last + mk - m_next)
            Ck = decay[..., None, None] * Ck + kw.transpose(-1, -2) @ vc
            nk = decay[..., None] * nk + kw.sum(-2)
            mk = m_next
    h = torch.cat(out, 2).transpose(1, 2).to(q.dtype)
    return h, Ck, nk, mk
