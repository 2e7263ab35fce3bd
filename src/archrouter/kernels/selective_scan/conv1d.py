"""Triton depthwise causal conv1d (+ SiLU) for Mamba: prefill over packed sequences and a decode step.

The conv state of sequence i is `conv_state[slots[i]]`: its last width-1 inputs, oldest first.
Prefill reads the old state for the first width-1 positions of each sequence, and a second,
tiny kernel writes the new state after every output is done (so no program reads a state row
another program is writing). Negative slot: zero history, nothing written.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _causal_conv1d_fwd_kernel(
    x_ptr, w_ptr, bias_ptr, state_ptr, y_ptr, cu_seqlens_ptr, slots_ptr,
    stride_x, stride_y, stride_state_slot, stride_state_dim,
    dim,
    WIDTH: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr,
):
    pid_d = tl.program_id(0)
    seq = tl.program_id(1)
    pid_t = tl.program_id(2)
    bos = tl.load(cu_seqlens_ptr + seq).to(tl.int64)
    seqlen = (tl.load(cu_seqlens_ptr + seq + 1) - tl.load(cu_seqlens_ptr + seq)).to(tl.int32)
    if pid_t * BLOCK_T < seqlen:
        # 64-bit scalar bases, 32-bit tile offsets: per-element 64-bit address math spilled registers
        x_base = x_ptr + bos * stride_x
        y_base = y_ptr + bos * stride_y
        offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
        mask_d = offs_d < dim
        lt = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)  # positions within the sequence
        mask_t = lt < seqlen
        acc = tl.zeros((BLOCK_T, BLOCK_D), dtype=tl.float32)
        if HAS_BIAS:
            acc += tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)[None, :]
        for k in tl.static_range(WIDTH):
            w = tl.load(w_ptr + offs_d * WIDTH + k, mask=mask_d, other=0.0).to(tl.float32)
            lp = lt - (WIDTH - 1) + k  # input position feeding output lt through tap k
            xv = tl.load(x_base + lp[:, None] * stride_x + offs_d[None, :],
                         mask=(mask_t & (lp >= 0))[:, None] & mask_d[None, :], other=0.0)
            acc += xv.to(tl.float32) * w[None, :]
        slot = tl.load(slots_ptr + seq).to(tl.int64)
        if (pid_t == 0) & (slot >= 0):
            # the first width-1 outputs also read the sequence's history: state column (width-1) + lp
            s_base = state_ptr + slot * stride_state_slot
            for k in tl.static_range(WIDTH - 1):
                w = tl.load(w_ptr + offs_d * WIDTH + k, mask=mask_d, other=0.0).to(tl.float32)
                lp = lt - (WIDTH - 1) + k
                col = tl.where(lp < 0, (WIDTH - 1) + lp, 0)
                sv = tl.load(s_base + offs_d[None, :] * stride_state_dim + col[:, None],
                             mask=(mask_t & (lp < 0))[:, None] & mask_d[None, :], other=0.0)
                acc += sv.to(tl.float32) * w[None, :]
        if SILU:
            acc = acc * tl.sigmoid(acc)
        tl.store(y_base + lt[:, None] * stride_y + offs_d[None, :], acc.to(y_ptr.dtype.element_ty),
                 mask=mask_t[:, None] & mask_d[None, :])


@triton.jit
def _conv_state_write_kernel(
    x_ptr, state_ptr, cu_seqlens_ptr, slots_ptr,
    stride_x, stride_state_slot, stride_state_dim,
    dim,
    WIDTH: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
):
    pid_d = tl.program_id(0)
    seq = tl.program_id(1)
    slot = tl.load(slots_ptr + seq).to(tl.int64)
    if slot >= 0:
        bos = tl.load(cu_seqlens_ptr + seq).to(tl.int64)
        eos = tl.load(cu_seqlens_ptr + seq + 1).to(tl.int64)
        offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
        mask_d = offs_d < dim
        j = tl.arange(0, BLOCK_K)
        mask_j = j < WIDTH - 1
        p = eos - (WIDTH - 1) + j  # position of new state column j
        in_seq = p >= bos
        base = state_ptr + slot * stride_state_slot + offs_d[None, :] * stride_state_dim
        xv = tl.load(x_ptr + p[:, None] * stride_x + offs_d[None, :],
                     mask=(mask_j & in_seq)[:, None] & mask_d[None, :], other=0.0)
        # short sequence: the oldest columns come from the old state, shifted left by its length
        old_col = tl.where(in_seq, 0, j + (eos - bos))
        sv = tl.load(base + old_col[:, None], mask=(mask_j & ~in_seq)[:, None] & mask_d[None, :], other=0.0)
        new = tl.where(in_seq[:, None], xv.to(state_ptr.dtype.element_ty), sv)
        tl.store(base + j[:, None], new, mask=mask_j[:, None] & mask_d[None, :])


@triton.jit
def _causal_conv1d_update_kernel(
    x_ptr, w_ptr, bias_ptr, state_ptr, y_ptr, slots_ptr,
    stride_x, stride_y, stride_state_slot, stride_state_dim,
    dim,
    WIDTH: tl.constexpr, BLOCK_K: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    pid_d = tl.program_id(0)
    row = tl.program_id(1).to(tl.int64)
    slot = tl.load(slots_ptr + row).to(tl.int64)
    has_state = (tl.zeros([BLOCK_D, BLOCK_K], dtype=tl.int64) + slot) >= 0  # tensor mask (interpreter)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_d = offs_d < dim
    k = tl.arange(0, BLOCK_K)
    base = state_ptr + slot * stride_state_slot + offs_d[:, None] * stride_state_dim
    x = tl.load(x_ptr + row * stride_x + offs_d, mask=mask_d, other=0.0)
    # window[:, k] = the input k taps back from the newest: state columns 0..width-2, then x
    past = tl.load(base + k[None, :], mask=mask_d[:, None] & (k < WIDTH - 1)[None, :] & has_state, other=0.0)
    window = tl.where((k == WIDTH - 1)[None, :], x[:, None].to(past.dtype), past)
    # the new state: columns 1..width-1 of the window, read before anything is written
    shifted = tl.load(base + (k + 1)[None, :], mask=mask_d[:, None] & (k < WIDTH - 2)[None, :] & has_state,
                      other=0.0)
    shifted = tl.where((k == WIDTH - 2)[None, :], x[:, None].to(shifted.dtype), shifted)
    w = tl.load(w_ptr + offs_d[:, None] * WIDTH + k[None, :], mask=mask_d[:, None] & (k < WIDTH)[None, :],
                other=0.0).to(tl.float32)
    acc = tl.sum(window.to(tl.float32) * w, axis=1)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    if SILU:
        acc = acc * tl.sigmoid(acc)
    tl.store(y_ptr + row * stride_y + offs_d, acc.to(y_ptr.dtype.element_ty), mask=mask_d)
    tl.store(base + k[None, :], shifted.to(state_ptr.dtype.element_ty),
             mask=mask_d[:, None] & (k < WIDTH - 1)[None, :] & has_state)


def _rows(t: torch.Tensor) -> int:
    assert t.stride(-1) == 1, "last dimension must be contiguous"
    return t.stride(0)


def causal_conv1d_triton(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    conv_state: torch.Tensor,
    cu_seqlens: torch.Tensor,
    slots: torch.Tensor,
    *,
    activation: str | None = "silu",
    max_seqlen: int | None = None,
    block_t: int = 32,
    block_d: int = 128,
    num_warps: int = 8,
) -> torch.Tensor:
    """Triton path of `causal_conv1d` (see naive.causal_conv1d_ref). `max_seqlen` avoids a device sync."""
    total, dim = x.shape
    width = weight.shape[1]
    assert width >= 2 and conv_state.shape[1:] == (dim, width - 1) and conv_state.stride(2) == 1
    weight = weight.contiguous()
    if max_seqlen is None:
        max_seqlen = int((cu_seqlens[1:] - cu_seqlens[:-1]).max()) if slots.numel() else 0
    y = torch.empty((total, dim), dtype=x.dtype, device=x.device)
    n_seqs = slots.shape[0]
    if n_seqs == 0 or total == 0:
        return y
    grid = (triton.cdiv(dim, block_d), n_seqs, triton.cdiv(max(max_seqlen, 1), block_t))
    _causal_conv1d_fwd_kernel[grid](
        x, weight, bias if bias is not None else weight, conv_state, y, cu_seqlens, slots,
        _rows(x), y.stride(0), conv_state.stride(0), conv_state.stride(1),
        dim,
        WIDTH=width, HAS_BIAS=bias is not None, SILU=activation == "silu",
        BLOCK_T=block_t, BLOCK_D=block_d, num_warps=num_warps,
    )
    _conv_state_write_kernel[(triton.cdiv(dim, block_d), n_seqs)](
        x, conv_state, cu_seqlens, slots,
        _rows(x), conv_state.stride(0), conv_state.stride(1),
        dim,
        WIDTH=width, BLOCK_K=triton.next_power_of_2(width - 1), BLOCK_D=block_d, num_warps=num_warps,
    )
    return y


def causal_conv1d_update_triton(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    conv_state: torch.Tensor,
    slots: torch.Tensor,
    *,
    activation: str | None = "silu",
    block_d: int = 256,
    num_warps: int = 4,
) -> torch.Tensor:
    """Triton path of `causal_conv1d_update` (see naive.causal_conv1d_update_ref)."""
    n_rows, dim = x.shape
    width = weight.shape[1]
    assert width >= 2 and conv_state.shape[1:] == (dim, width - 1) and conv_state.stride(2) == 1
    weight = weight.contiguous()
    y = torch.empty((n_rows, dim), dtype=x.dtype, device=x.device)
    grid = (triton.cdiv(dim, block_d), n_rows)
    _causal_conv1d_update_kernel[grid](
        x, weight, bias if bias is not None else weight, conv_state, y, slots,
        _rows(x), y.stride(0), conv_state.stride(0), conv_state.stride(1),
        dim,
        WIDTH=width, BLOCK_K=triton.next_power_of_2(width), HAS_BIAS=bias is not None,
        SILU=activation == "silu", BLOCK_D=block_d, num_warps=num_warps,
    )
    return y
