"""Fused recurrent WKV-7 in Triton: one program walks one sequence's tokens for one head and a
block of value rows, with that block of the state in registers.

It serves batched decode (every sequence one token: a single step per program, the whole
state read once and written once) and short or ragged prefills. Each sequence reads and writes
its state in a preallocated pool through `slots`; a negative slot (a padding row of a fixed-size
decode batch, e.g. inside a CUDA graph) leaves every state untouched.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from archrouter.kernels.wkv7 import _tune


@triton.jit
def _fused_recurrent_wkv7_kernel(
    r, w, k, v, a, b, y,  # [T_total, H, N] (v, y: [T_total, H, V])
    state_pool,  # [P, H, V, N] fp32
    slots,  # [num_seqs] int
    cu_seqlens,  # [num_seqs + 1] int (unused when EQUAL_LEN)
    T,  # tokens per sequence when EQUAL_LEN
    H: tl.constexpr,
    N: tl.constexpr,
    V: tl.constexpr,
    BV: tl.constexpr,
    EQUAL_LEN: tl.constexpr,
):
    i_nh = tl.program_id(0).to(tl.int64)
    i_v = tl.program_id(1)
    i_n, i_h = i_nh // H, i_nh % H
    if EQUAL_LEN:
        bos = i_n * T
        eos = bos + T
    else:
        bos = tl.load(cu_seqlens + i_n).to(tl.int64)
        eos = tl.load(cu_seqlens + i_n + 1).to(tl.int64)
    slot = tl.load(slots + i_n).to(tl.int64)

    o_k = tl.arange(0, N)
    o_v = i_v * BV + tl.arange(0, BV)
    # state tile [BV, N]: value rows x key columns, the pool's own layout (coalesced along keys)
    p_s = state_pool + tl.maximum(slot, 0) * H * V * N + i_h * V * N + o_v[:, None] * N + o_k[None, :]
    # a full-shape mask built by comparison (the interpreter rejects scalar-and-tensor masks)
    m_s = (tl.zeros([BV, N], dtype=tl.int64) + slot) >= 0
    s = tl.load(p_s, mask=m_s, other=0.0).to(tl.float32)

    for t in range(bos, eos):
        base_k = t * H * N + i_h * N
        base_v = t * H * V + i_h * V
        b_r = tl.load(r + base_k + o_k).to(tl.float32)
        b_w = tl.load(w + base_k + o_k).to(tl.float32)
        b_k = tl.load(k + base_k + o_k).to(tl.float32)
        b_a = tl.load(a + base_k + o_k).to(tl.float32)
        b_b = tl.load(b + base_k + o_k).to(tl.float32)
        b_v = tl.load(v + base_v + o_v).to(tl.float32)
        sa = tl.sum(s * b_a[None, :], axis=1)  # S a: [BV]
        s = s * tl.exp(b_w)[None, :] + sa[:, None] * b_b[None, :] + b_v[:, None] * b_k[None, :]
        b_y = tl.sum(s * b_r[None, :], axis=1)
        tl.store(y + base_v + o_v, b_y.to(y.dtype.element_ty))

    tl.store(p_s, s, mask=m_s)


def fused_recurrent_wkv7(
    r: torch.Tensor,
    w: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    state_pool: torch.Tensor,
    slots: torch.Tensor | None = None,
    cu_seqlens: torch.Tensor | None = None,
    *,
    block_v: int | None = None,
    num_warps: int | None = None,
) -> torch.Tensor:
    """Same contract as `naive_wkv7`: [B, T, H, N] or [1, T_total, H, N] + cu_seqlens; w is log decay."""
    B, T, H, N = r.shape
    V = v.shape[-1]
    assert N & (N - 1) == 0 and V & (V - 1) == 0, "head sizes must be powers of two"
    assert state_pool.dtype == torch.float32 and state_pool.is_contiguous()
    assert tuple(state_pool.shape[1:]) == (H, V, N)
    r, w, k, v, a, b = (x.contiguous() for x in (r, w, k, v, a, b))
    if cu_seqlens is None:
        n_seq, equal_len = B, True
        cu = slots if slots is not None else state_pool  # any tensor: not read when EQUAL_LEN
    else:
        assert B == 1, "with cu_seqlens the inputs must be packed as [1, T_total, H, N]"
        n_seq, equal_len = cu_seqlens.numel() - 1, False
        cu = cu_seqlens
    if slots is None:
        slots = _tune.identity_slots(n_seq, r.device)
    y = torch.empty_like(v)

    def launch(cfg: tuple[int, int]) -> None:
        bv, nw = cfg
        _fused_recurrent_wkv7_kernel[(n_seq * H, triton.cdiv(V, bv))](
            r, w, k, v, a, b, y, state_pool, slots, cu, T,
            H=H, N=N, V=V, BV=bv, EQUAL_LEN=equal_len, num_warps=nw,
        )

    if block_v is not None or num_warps is not None:
        bv = block_v or V
        launch((bv, num_warps or max(1, min(8, bv * N // 1024))))
        return y
    # default: whole value rows per program when there are many (sequence, head) pairs, else split
    # them so enough programs stream the state; the tuner may pick better on the device
    def cfgs() -> list[tuple[int, int]]:  # (value rows per program, warps)
        default = (V, max(1, min(8, V * N // 1024))) if n_seq * H >= 1024 else (max(16, V // 4), 1)
        cands = [default, (16, 1), (32, 1), (32, 2), (64, 4), (64, 8)]
        return [c for c in dict.fromkeys(cands) if c[0] <= V]

    key = ("fused_recurrent", H, N, V, equal_len, T == 1, _tune.bucket(n_seq * H))
    launch(_tune.pick(key, cfgs, launch, r.device, state=state_pool))
    return y
