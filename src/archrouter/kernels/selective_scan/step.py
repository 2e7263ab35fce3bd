"""Triton one-step selective state update for decode.

A batch of sequences, each at its own position: row i reads and writes `state[slots[i]]`
(an fp32 pool row) in place. One program owns (row, block of channels); the whole step of a
layer's SSM (softplus(dt + bias), discretisation, state update, C readout, D skip, silu(z)
gate) is one pass over the state: read it once, write it once. Negative slot: zero state,
nothing written (padded rows of a fixed-size, CUDA-graph-captured batch).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from archrouter.kernels.selective_scan.scan import LOG2E, _softplus


@triton.jit
def _selective_state_update_kernel(
    x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, dt_bias_ptr, state_ptr, y_ptr, slots_ptr,
    stride_x, stride_dt, stride_b, stride_c, stride_z, stride_y, stride_state,
    dim, dstate,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_DT_BIAS: tl.constexpr, DT_SOFTPLUS: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid_d = tl.program_id(0)
    row = tl.program_id(1).to(tl.int64)
    slot = tl.load(slots_ptr + row).to(tl.int64)
    # a [D, N] mask rather than a scalar one: the interpreter rejects scalar & tensor masks
    has_state = (tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.int64) + slot) >= 0

    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    mask_d = offs_d < dim
    mask_n = offs_n < dstate
    mask_dn = mask_d[:, None] & mask_n[None, :]

    state_ptrs = state_ptr + slot * stride_state + offs_d[:, None] * dstate + offs_n[None, :]
    h = tl.load(state_ptrs, mask=mask_dn & has_state, other=0.0).to(tl.float32)
    A = tl.load(A_ptr + offs_d[:, None] * dstate + offs_n[None, :], mask=mask_dn, other=0.0).to(tl.float32)
    x = tl.load(x_ptr + row * stride_x + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    dt = tl.load(dt_ptr + row * stride_dt + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    if HAS_DT_BIAS:
        dt += tl.load(dt_bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    if DT_SOFTPLUS:
        dt = _softplus(dt)
    Bv = tl.load(B_ptr + row * stride_b + offs_n, mask=mask_n, other=0.0).to(tl.float32)
    Cv = tl.load(C_ptr + row * stride_c + offs_n, mask=mask_n, other=0.0).to(tl.float32)

    h = tl.exp2(dt[:, None] * (A * LOG2E)) * h + (dt * x)[:, None] * Bv[None, :]
    tl.store(state_ptrs, h.to(state_ptr.dtype.element_ty), mask=mask_dn & has_state)

    y = tl.sum(h * Cv[None, :], axis=1)
    if HAS_D:
        y += x * tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    if HAS_Z:
        z = tl.load(z_ptr + row * stride_z + offs_d, mask=mask_d, other=0.0).to(tl.float32)
        y = y * z * tl.sigmoid(z)
    tl.store(y_ptr + row * stride_y + offs_d, y.to(y_ptr.dtype.element_ty), mask=mask_d)


def _rows(t: torch.Tensor) -> int:
    assert t.stride(-1) == 1, "last dimension must be contiguous"
    return t.stride(0)


def selective_state_update_triton(
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
    block_d: int | None = None,
    num_warps: int = 4,
) -> torch.Tensor:
    """Triton path of `selective_state_update` (see naive.selective_state_update_ref)."""
    n_rows, dim = x.shape
    dstate = A.shape[1]
    assert state.is_contiguous() and state.shape[1:] == (dim, dstate)
    A = A.contiguous()
    block_n = triton.next_power_of_2(dstate)
    if block_d is None:
        # ~2K state elements per program: enough bytes in flight per SM without spilling
        block_d = max(16, min(triton.next_power_of_2(dim), 2048 // block_n))
    y = torch.empty((n_rows, dim), dtype=x.dtype, device=x.device)
    grid = (triton.cdiv(dim, block_d), n_rows)
    _selective_state_update_kernel[grid](
        x, dt, A, B, C, D if D is not None else x, z if z is not None else x,
        dt_bias if dt_bias is not None else x, state, y, slots,
        _rows(x), _rows(dt), _rows(B), _rows(C), _rows(z) if z is not None else 0,
        y.stride(0), state.stride(0),
        dim, dstate,
        HAS_D=D is not None, HAS_Z=z is not None, HAS_DT_BIAS=dt_bias is not None, DT_SOFTPLUS=dt_softplus,
        BLOCK_D=block_d, BLOCK_N=block_n,
        num_warps=num_warps,
    )
    return y
