"""Plain-PyTorch sLSTM reference (the ground truth for the Triton kernel).

The cell is the xLSTM sLSTM of the `xlstm` package's vanilla backend
(`xlstm.blocks.slstm.src.vanilla.slstm`): scalar memory, exponential input gate, a
stabiliser state m, and head-wise recurrent connections from the previous output h.

Layout (shared with the Triton kernel):

- ``x`` (T, 4, NH, D): input pre-activations W x_t of the gates (i, f, z, o), packed over sequences
  with ``cu_seqlens``; ``R`` (NH, 4, D_out, D_in) recurrent weights; ``b`` (4, NH, D) biases;
- a state pool ``h, c, n, m`` (P, NH, D) fp32; sequence s starts from row ``slots[s]`` and leaves
  its final state there. A fresh state is h = c = n = 0, m = -inf (the first step then takes
  m = i, as the package does for an all-zero state).

    raw = x_t + R h_{t-1} + b;     m_t = max(i, m_{t-1} + logsigmoid(f))
    c_t = f' c_{t-1} + i' tanh(z);  n_t = f' n_{t-1} + i';  h_t = sigmoid(o) c_t / n_t
    with i' = min(exp(i - m_t), 1), f' = min(exp(m_{t-1} + logsigmoid(f) - m_t), 1)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def slstm_cell_naive(raw: torch.Tensor, c, n, m):
    """Pointwise part. raw (N, 4, NH, D) fp32; c, n, m (N, NH, D). Returns h, c, n, m."""
    iraw, fraw, zraw, oraw = raw.unbind(1)
    logfm = m + F.logsigmoid(fraw)
    m1 = torch.maximum(iraw, logfm)
    ia = torch.exp(iraw - m1).clamp(max=1.0)
    fa = torch.exp(logfm - m1).clamp(max=1.0)
    c1 = fa * c + ia * torch.tanh(zraw)
    n1 = fa * n + ia
    return torch.sigmoid(oraw) * c1 / n1, c1, n1, m1


def slstm_scan_naive(
    x: torch.Tensor,
    R: torch.Tensor,
    b: torch.Tensor,
    h: torch.Tensor,
    c: torch.Tensor,
    n: torch.Tensor,
    m: torch.Tensor,
    slots: torch.Tensor,
    cu_seqlens: torch.Tensor,
) -> torch.Tensor:
    """Runs every sequence through the recurrence; returns y (T, NH, D) and updates the pool rows."""
    y = torch.empty(x.shape[0], *x.shape[2:], dtype=x.dtype, device=x.device)
    Rf, bf = R.float(), b.float()
    cu = cu_seqlens.tolist()
    for s, (bos, eos) in enumerate(zip(cu[:-1], cu[1:], strict=True)):
        slot = int(slots[s])
        # clones, not views: the write-back below would break autograd on the views
        hs, cs, ns, ms = h[slot].clone(), c[slot].clone(), n[slot].clone(), m[slot].clone()
        for t in range(bos, eos):
            raw = x[t].float() + torch.einsum("hgoi,hi->gho", Rf, hs) + bf
            hs, cs, ns, ms = slstm_cell_naive(raw[None], cs[None], ns[None], ms[None])
            hs, cs, ns, ms = hs[0], cs[0], ns[0], ms[0]
            y[t] = hs.to(y.dtype)
        h[slot], c[slot], n[slot], m[slot] = hs, cs, ns, ms
    return y


def slstm_step_naive(x, R, b, h, c, n, m, slots) -> torch.Tensor:
    """One step for N sequences at once: x (N, 4, NH, D) -> y (N, NH, D). No host syncs (graph-safe)."""
    sl = slots.long()
    raw = x.float() + torch.einsum("hgoi,nhi->ngho", R.float(), h[sl]) + b.float()
    h1, c1, n1, m1 = slstm_cell_naive(raw, c[sl], n[sl], m[sl])
    h[sl], c[sl], n[sl], m[sl] = h1, c1, n1, m1
    return h1.to(x.dtype)
