"""Plain-PyTorch WKV-7 recurrence: the reference every Triton path is tested against.

Per head, with the state S (value rows x key columns, fp32) and per-token vectors r, w, k, v, a, b::

    S_t = S_{t-1} diag(exp(w_t)) + (S_{t-1} a_t) b_t^T + v_t k_t^T
    y_t = S_t r_t

`w` is the log decay (<= 0). RWKV-7 calls this with a = -kk, b = kk * a_gate (the
generalized delta rule). The state layout [H, N_v, N_k] is the `rwkv` package's.

Sequences come packed: either a batch [B, T, H, N] of equal lengths, or [1, T_total, H, N]
with `cu_seqlens` (cumulative offsets, length num_seqs + 1). Sequence i reads and writes its
state in `state_pool[slots[i]]`; a negative slot marks a padding sequence whose state is neither
read nor written (its output is computed from a zero state).
"""

from __future__ import annotations

import torch


def _flatten(
    x: torch.Tensor, cu_seqlens: torch.Tensor | None
) -> tuple[torch.Tensor, list[int]]:
    """[B, T, H, N] or [1, T_total, H, N] -> ([T_total, H, N], offsets as a host list)."""
    if cu_seqlens is None:
        B, T = x.shape[:2]
        return x.reshape(B * T, *x.shape[2:]), [i * T for i in range(B + 1)]
    if x.shape[0] != 1:
        raise ValueError("with cu_seqlens the inputs must be packed as [1, T_total, H, N]")
    return x[0], [int(c) for c in cu_seqlens.tolist()]


def naive_wkv7(
    r: torch.Tensor,
    w: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    state_pool: torch.Tensor,
    slots: torch.Tensor | None = None,
    cu_seqlens: torch.Tensor | None = None,
) -> torch.Tensor:
    """WKV-7 over packed sequences; updates `state_pool` in place; returns y shaped like v."""
    H, N = r.shape[-2:]
    if state_pool.dtype != torch.float32 or state_pool.shape[1:] != (H, v.shape[-1], N):
        raise ValueError(f"state_pool must be fp32 [P, {H}, {v.shape[-1]}, {N}], got "
                         f"{state_pool.dtype} {tuple(state_pool.shape)}")
    if cu_seqlens is None:
        return _naive_equal_length(r, w, k, v, a, b, state_pool, slots)
    rr, offsets = _flatten(r, cu_seqlens)
    ww, kk, vv, aa, bb = (_flatten(x, cu_seqlens)[0] for x in (w, k, v, a, b))
    n_seq = len(offsets) - 1
    slots = torch.arange(n_seq) if slots is None else slots
    y = torch.empty_like(vv)
    for i, slot in enumerate(slots.tolist()):
        lo, hi = offsets[i], offsets[i + 1]
        seq = [x[lo:hi].unsqueeze(0) for x in (rr, ww, kk, vv, aa, bb)]
        s0 = state_pool[slot : slot + 1] if slot >= 0 else state_pool.new_zeros(1, *state_pool.shape[1:])
        out, s1 = _recur(*seq, s0)
        y[lo:hi] = out[0]
        if slot >= 0:
            state_pool[slot].copy_(s1[0])
    return y.unsqueeze(0)


def _naive_equal_length(r, w, k, v, a, b, state_pool, slots):
    B = r.shape[0]
    if slots is None:  # rows are the pool's rows: no gather, no host sync (CUDA-graph safe)
        s0 = state_pool[:B]
        # a view of the pool that the write below overwrites: autograd (training, gradient tests) needs it intact
        y, s1 = _recur(r, w, k, v, a, b, s0.clone() if torch.is_grad_enabled() else s0)
        s0.copy_(s1)
        return y
    slots = slots.to(state_pool.device)
    live = slots >= 0
    if bool(live.all()):  # every row a real slot (the engine's case): one gather, one scatter
        y, s1 = _recur(r, w, k, v, a, b, state_pool.index_select(0, slots))
        state_pool[slots] = s1
        return y
    s0 = state_pool[slots.clamp(min=0)] * live.view(B, 1, 1, 1)
    y, s1 = _recur(r, w, k, v, a, b, s0)
    state_pool[slots[live]] = s1[live]
    return y


def _recur(r, w, k, v, a, b, state):
    """The recurrence itself on [B, T, H, N] inputs and a [B, H, N, N] state (fp32 math)."""
    out_dtype = v.dtype
    r, w, k, v, a, b = (x.float() for x in (r, w, k, v, a, b))
    S = state.float() if r.shape[1] else state.float().clone()  # every step makes a new S: no copy needed
    decay = torch.exp(w)
    ys = []
    for t in range(r.shape[1]):
        sa = torch.einsum("bhvk,bhk->bhv", S, a[:, t])
        S = (S * decay[:, t, :, None, :] + sa[..., None] * b[:, t, :, None, :]
             + v[:, t, :, :, None] * k[:, t, :, None, :])
        ys.append(torch.einsum("bhvk,bhk->bhv", S, r[:, t]))
    y = torch.stack(ys, 1) if ys else v.new_zeros(v.shape)
    return y.to(out_dtype), S
