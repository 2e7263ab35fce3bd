"""Plain-PyTorch references for Mamba-1's selective scan, its one-step update and the causal conv1d.

Same signatures as the Triton paths in `scan.py`, `step.py` and `conv1d.py`. Shapes:

- packed tokens: `x`, `dt`, `z` are [total_tokens, dim]; `B`, `C` are [total_tokens, d_state];
  sequence i owns rows `cu_seqlens[i]:cu_seqlens[i+1]` (no padding anywhere);
- decode: one token per sequence, `x` etc. are [n_seqs, dim];
- states live in preallocated pools, one row per slot: SSM `state[pool, dim, d_state]` (fp32),
  conv `conv_state[pool, dim, width - 1]` (the last width-1 inputs, oldest first).
  `slots[i]` names sequence i's row. A negative slot means "no state": start from zeros and
  write nothing back, so a padded row in a fixed-size decode batch cannot touch any state.

Math (Mamba-1): dt' = softplus(dt + dt_bias); h_t = exp(dt' A) h_{t-1} + dt' x_t B_t;
y_t = (C_t . h_t + D x_t) * silu(z_t). Everything is computed in fp32 and returned in x's dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _dt(dt: torch.Tensor, dt_bias: torch.Tensor | None, dt_softplus: bool) -> torch.Tensor:
    dt = dt.float()
    if dt_bias is not None:
        dt = dt + dt_bias.float()
    return F.softplus(dt) if dt_softplus else dt


def _finish(y: torch.Tensor, x: torch.Tensor, D: torch.Tensor | None, z: torch.Tensor | None) -> torch.Tensor:
    if D is not None:
        y = y + x.float() * D.float()
    if z is not None:
        y = y * F.silu(z.float())
    return y


def selective_scan_ref(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    z: torch.Tensor | None,
    dt_bias: torch.Tensor | None,
    state: torch.Tensor,
    cu_seqlens: torch.Tensor,
    slots: torch.Tensor,
    *,
    dt_softplus: bool = True,
    max_seqlen: int | None = None,  # unused here; the Triton path sizes its grid with it
) -> torch.Tensor:
    """Prefill scan over packed sequences; reads and writes each sequence's state in `state[slot]`."""
    A = A.float()
    y = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    bounds = cu_seqlens.tolist()
    for i, slot in enumerate(slots.tolist()):
        bos, eos = bounds[i], bounds[i + 1]
        h = state[slot].float().clone() if slot >= 0 else x.new_zeros(A.shape, dtype=torch.float32)
        xs = x[bos:eos].float()
        d = _dt(dt[bos:eos], dt_bias, dt_softplus)  # [T, dim]
        dA = torch.exp(d[:, :, None] * A)  # [T, dim, N]
        dBx = (d * xs)[:, :, None] * B[bos:eos].float()[:, None, :]
        Cs = C[bos:eos].float()
        out = []
        for t in range(eos - bos):
            h = dA[t] * h + dBx[t]
            out.append(h @ Cs[t])
        if out:
            ys = torch.stack(out)
            zs = z[bos:eos] if z is not None else None
            y[bos:eos] = _finish(ys, xs, D, zs).to(x.dtype)
        if slot >= 0:
            state[slot] = h.to(state.dtype)
    return y


def selective_state_update_ref(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    z: torch.Tensor | None,
    dt_bias: torch.Tensor | None,
    state: torch.Tensor,
    slots: torch.Tensor,
    *,
    dt_softplus: bool = True,
) -> torch.Tensor:
    """One decode step for a batch of sequences, each at its own position; updates `state[slots]`."""
    slots = slots.long()
    valid = slots >= 0
    safe = torch.where(valid, slots, torch.zeros_like(slots))
    h = state[safe].float() * valid[:, None, None]
    d = _dt(dt, dt_bias, dt_softplus)  # [S, dim]
    h = torch.exp(d[:, :, None] * A.float()) * h + (d * x.float())[:, :, None] * B.float()[:, None, :]
    y = torch.einsum("sdn,sn->sd", h, C.float())
    if bool(valid.any()):
        state[slots[valid]] = h[valid].to(state.dtype)
    return _finish(y, x, D, z).to(x.dtype)


def causal_conv1d_ref(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    conv_state: torch.Tensor,
    cu_seqlens: torch.Tensor,
    slots: torch.Tensor,
    *,
    activation: str | None = "silu",
    max_seqlen: int | None = None,  # unused here; the Triton path sizes its grid with it
) -> torch.Tensor:
    """Depthwise causal conv over packed sequences, continuing from (and updating) `conv_state[slot]`."""
    dim, width = weight.shape
    y = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    bounds = cu_seqlens.tolist()
    for i, slot in enumerate(slots.tolist()):
        bos, eos = bounds[i], bounds[i + 1]
        past = conv_state[slot] if slot >= 0 else x.new_zeros(dim, width - 1)
        seq = torch.cat([past.float(), x[bos:eos].float().T], dim=1)  # [dim, width-1+T]
        out = F.conv1d(seq[None], weight.float()[:, None, :], bias.float() if bias is not None else None,
                       groups=dim)[0].T
        if activation == "silu":
            out = F.silu(out)
        y[bos:eos] = out.to(x.dtype)
        if slot >= 0:
            conv_state[slot] = seq[:, seq.shape[1] - (width - 1):].to(conv_state.dtype)
    return y


def causal_conv1d_update_ref(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    conv_state: torch.Tensor,
    slots: torch.Tensor,
    *,
    activation: str | None = "silu",
) -> torch.Tensor:
    """One decode step of the causal conv for a batch of sequences; shifts `conv_state[slots]` by one."""
    slots = slots.long()
    valid = slots >= 0
    safe = torch.where(valid, slots, torch.zeros_like(slots))
    past = conv_state[safe].float() * valid[:, None, None]
    window = torch.cat([past, x.float()[:, :, None]], dim=2)  # [S, dim, width]
    out = (window * weight.float()).sum(-1)
    if bias is not None:
        out = out + bias.float()
    if activation == "silu":
        out = F.silu(out)
    if bool(valid.any()):
        conv_state[slots[valid]] = window[valid, :, 1:].to(conv_state.dtype)
    return out.to(x.dtype)
