"""Plain-PyTorch mLSTM references (the ground truth for the Triton kernels).

Layout shared by every mLSTM function here and in the Triton modules:

- packed variable-length batch: ``q, k`` (T, H, K), ``v`` (T, H, V), gate pre-activations
  ``i, f`` (T, H); sequence ``s`` owns rows ``cu_seqlens[s]:cu_seqlens[s+1]``;
- a state pool ``C`` (P, H, K, V), ``n`` (P, H, K), ``m`` (P, H), fp32; sequence ``s`` reads its
  initial state from row ``slots[s]`` and writes its final state back there (slots unique).

The cell is the stabilised mLSTM of xLSTM / xLSTM-7B (transformers' ``mlstm_recurrent_step_native``):

    m_t = max(logsigmoid(f_t) + m_{t-1}, i_t)
    C_t = exp(logsigmoid(f_t) + m_{t-1} - m_t) C_{t-1} + exp(i_t - m_t) k_t v_t^T
    n_t = exp(logsigmoid(f_t) + m_{t-1} - m_t) n_{t-1} + exp(i_t - m_t) k_t
    h_t = (s q_t)^T C_t / (max(|(s q_t)^T n_t|, exp(-m_t)) + eps)        s = scale (default K^-1/2)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _seq_bounds(cu_seqlens: torch.Tensor) -> list[tuple[int, int]]:
    cu = cu_seqlens.tolist()
    return list(zip(cu[:-1], cu[1:], strict=True))


def mlstm_step_naive(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    i: torch.Tensor,
    f: torch.Tensor,
    C: torch.Tensor,
    n: torch.Tensor,
    m: torch.Tensor,
    slots: torch.Tensor,
    *,
    scale: float | None = None,
    eps: float = 1e-6,
) -> torch.Tensor:
    """One decode step for N sequences: q, k (N, H, K), v (N, H, V), i, f (N, H). Updates the pool rows."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    slots = slots.long()
    C0, n0, m0 = C[slots], n[slots], m[slots]
    qf, kf, vf = q.float(), k.float(), v.float()
    logf = F.logsigmoid(f.float())
    m1 = torch.maximum(logf + m0, i.float())
    fa = torch.exp(logf + m0 - m1)
    ia = torch.exp(i.float() - m1)
    C1 = fa[..., None, None] * C0 + ia[..., None, None] * (kf[..., :, None] * vf[..., None, :])
    n1 = fa[..., None] * n0 + ia[..., None] * kf
    qs = qf * scale
    num = torch.einsum("nhk,nhkv->nhv", qs, C1)
    den = torch.maximum((qs * n1).sum(-1).abs(), torch.exp(-m1)) + eps
    C[slots], n[slots], m[slots] = C1, n1, m1
    return (num / den[..., None]).to(q.dtype)


def mlstm_recurrent_naive(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    i: torch.Tensor,
    f: torch.Tensor,
    C: torch.Tensor,
    n: torch.Tensor,
    m: torch.Tensor,
    slots: torch.Tensor,
    cu_seqlens: torch.Tensor,
    *,
    scale: float | None = None,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Token by token: the definition. Returns h (T, H, V); updates the pool rows of `slots`."""
    h = torch.empty(v.shape, dtype=q.dtype, device=q.device)
    for s, (bos, eos) in enumerate(_seq_bounds(cu_seqlens)):
        slot = slots[s : s + 1]
        for t in range(bos, eos):
            h[t : t + 1] = mlstm_step_naive(
                q[t : t + 1],
                k[t : t + 1],
                v[t : t + 1],
                i[t : t + 1],
                f[t : t + 1],
                C,
                n,
                m,
                slot,
                scale=scale,
                eps=eps,
            )
    return h


def mlstm_chunkwise_naive(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    i: torch.Tensor,
    f: torch.Tensor,
    C: torch.Tensor,
    n: torch.Tensor,
    m: torch.Tensor,
    slots: torch.Tensor,
    cu_seqlens: torch.Tensor,
    *,
    scale: float | None = None,
    eps: float = 1e-6,
    chunk_size: int = 64,
) -> torch.Tensor:
    """The same cell, chunkwise-parallel in PyTorch (the CPU path; the Triton kernel's math).

    Within a chunk the stabiliser of row t is the recurrent m_t, so this equals the recurrent form
    including the eps term (not just up to the stabiliser).
    """
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    h = torch.empty(v.shape, dtype=q.dtype, device=q.device)
    for s, (bos, eos) in enumerate(_seq_bounds(cu_seqlens)):
        slot = int(slots[s])
        Ck, nk, mk = C[slot].clone(), n[slot].clone(), m[slot].clone()  # (H,K,V), (H,K), (H,)
        for t0 in range(bos, eos, chunk_size):
            t1 = min(t0 + chunk_size, eos)
            qc, kc, vc = (x[t0:t1].float().transpose(0, 1) for x in (q, k, v))  # (H, L, *)
            ic = i[t0:t1].float().t()  # (H, L)
            b = F.logsigmoid(f[t0:t1].float().t()).cumsum(-1)  # (H, L)
            L = t1 - t0
            causal = torch.ones(L, L, dtype=torch.bool, device=q.device).tril()
            logD = (b[:, :, None] - b[:, None, :] + ic[:, None, :]).masked_fill(~causal, float("-inf"))
            m_inter = b + mk[:, None]
            m_row = torch.maximum(m_inter, logD.amax(-1))  # the recurrent m_t
            Sg = (qc @ kc.transpose(-1, -2)) * scale * torch.exp(logD - m_row[..., None])
            inter = torch.exp(m_inter - m_row) * scale  # (H, L)
            num = inter[..., None] * (qc @ Ck) + Sg @ vc
            den = inter * (qc @ nk[..., None]).squeeze(-1) + Sg.sum(-1)
            hc = num / (torch.maximum(den.abs(), torch.exp(-m_row)) + eps)[..., None]
            h[t0:t1] = hc.transpose(0, 1).to(q.dtype)
            # carry the state to the chunk end
            b_last = b[:, -1]
            a = b_last[:, None] - b + ic  # (H, L)
            m_next = torch.maximum(b_last + mk, a.amax(-1))
            kw = kc * torch.exp(a - m_next[:, None])[..., None]
            decay = torch.exp(b_last + mk - m_next)
            Ck = decay[:, None, None] * Ck + kw.transpose(-1, -2) @ vc
            nk = decay[:, None] * nk + kw.sum(1)
            mk = m_next
        C[slot], n[slot], m[slot] = Ck, nk, mk
    return h
