"""Triton selective scan for prefill over packed variable-length sequences.

One program owns (sequence, block of channels) and walks the sequence in time chunks. Inside a
chunk the linear recurrence h_t = a_t h_{t-1} + b_t runs as a parallel `tl.associative_scan`
over a [BLOCK_T, BLOCK_D, BLOCK_N] tile, then the carried state is folded in
(h_t = prod(a) h_0 + scan(b)). softplus(dt + bias), the D skip and the silu(z) gate are fused.
Positions past a sequence's end get dt = 0 (a = 1, b = 0), so a chunk's tail never changes the
state; the state is read from and written to `state[slot]` only (negative slot: zeros, no write).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

LOG2E = tl.constexpr(1.4426950408889634)  # a constexpr: kernels may only read constexpr globals


@triton.jit
def _combine(a1, b1, a2, b2):
    # (a1, b1) then (a2, b2): h -> a2 (a1 h + b1) + b2
    return a1 * a2, a2 * b1 + b2


@triton.jit
def _softplus(x):
    # torch's softplus with threshold 20
    return tl.where(x <= 20.0, tl.log(1.0 + tl.exp(x)), x)


@triton.jit
def _selective_scan_fwd_kernel(
    x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, dt_bias_ptr, state_ptr, y_ptr,
    cu_seqlens_ptr, slots_ptr,
    stride_x, stride_dt, stride_b, stride_c, stride_z, stride_y, stride_state,
    dim, dstate,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_DT_BIAS: tl.constexpr, DT_SOFTPLUS: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid_d = tl.program_id(0)
    seq = tl.program_id(1)
    bos = tl.load(cu_seqlens_ptr + seq).to(tl.int64)
    eos = tl.load(cu_seqlens_ptr + seq + 1).to(tl.int64)
    slot = tl.load(slots_ptr + seq).to(tl.int64)

    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    offs_t = tl.arange(0, BLOCK_T)
    mask_d = offs_d < dim
    mask_n = offs_n < dstate
    mask_dn = mask_d[:, None] & mask_n[None, :]

    # exp(dt A) = exp2(dt A log2 e); fold log2 e into A once
    A = tl.load(A_ptr + offs_d[:, None] * dstate + offs_n[None, :], mask=mask_dn, other=0.0).to(tl.float32)
    A = A * LOG2E
    if HAS_D:
        Dv = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    if HAS_DT_BIAS:
        bias = tl.load(dt_bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)

    state_ptrs = state_ptr + slot * stride_state + offs_d[:, None] * dstate + offs_n[None, :]
    # a [D, N] mask rather than a scalar one: the interpreter rejects scalar & tensor masks
    has_state = (tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.int64) + slot) >= 0
    h = tl.load(state_ptrs, mask=mask_dn & has_state, other=0.0).to(tl.float32)

    seqlen = (eos - bos).to(tl.int32)
    for t0 in range(0, seqlen, BLOCK_T):
        # 64-bit scalar row base per chunk, 32-bit offsets inside it (fewer registers than 64-bit tiles)
        row0 = bos + t0
        mask_t = (t0 + offs_t) < seqlen
        mask_td = mask_t[:, None] & mask_d[None, :]
        mask_tn = mask_t[:, None] & mask_n[None, :]
        x = tl.load(x_ptr + row0 * stride_x + (offs_t[:, None] * stride_x + offs_d[None, :]), mask=mask_td,
                    other=0.0).to(tl.float32)
        dt = tl.load(dt_ptr + row0 * stride_dt + (offs_t[:, None] * stride_dt + offs_d[None, :]),
                     mask=mask_td, other=0.0).to(tl.float32)
        if HAS_DT_BIAS:
            dt = dt + bias[None, :]
        if DT_SOFTPLUS:
            dt = _softplus(dt)
        dt = tl.where(mask_td, dt, 0.0)  # identity step past the end: a = 1, b = 0
        Bt = tl.load(B_ptr + row0 * stride_b + (offs_t[:, None] * stride_b + offs_n[None, :]), mask=mask_tn,
                     other=0.0).to(tl.float32)
        Ct = tl.load(C_ptr + row0 * stride_c + (offs_t[:, None] * stride_c + offs_n[None, :]), mask=mask_tn,
                     other=0.0).to(tl.float32)

        a = tl.exp2(dt[:, :, None] * A[None, :, :])
        b = (dt * x)[:, :, None] * Bt[:, None, :]
        a_cum, h_local = tl.associative_scan((a, b), 0, _combine)
        hs = h_local + a_cum * h[None, :, :]
        y = tl.sum(hs * Ct[:, None, :], axis=2)
        if HAS_D:
            y += x * Dv[None, :]
        if HAS_Z:
            z = tl.load(z_ptr + row0 * stride_z + (offs_t[:, None] * stride_z + offs_d[None, :]),
                        mask=mask_td, other=0.0).to(tl.float32)
            y = y * z * tl.sigmoid(z)
        tl.store(y_ptr + row0 * stride_y + (offs_t[:, None] * stride_y + offs_d[None, :]),
                 y.to(y_ptr.dtype.element_ty), mask=mask_td)
        # the tail is identity, so the chunk's last row is the state after the last valid token
        h = tl.sum(tl.where((offs_t == BLOCK_T - 1)[:, None, None], hs, 0.0), axis=0)

    tl.store(state_ptrs, h.to(state_ptr.dtype.element_ty), mask=mask_dn & has_state)


@triton.jit
def _selective_scan_recurrent_kernel(
    x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, dt_bias_ptr, state_ptr, y_ptr,
    cu_seqlens_ptr, slots_ptr,
    stride_x, stride_dt, stride_b, stride_c, stride_z, stride_y, stride_state,
    dim, dstate,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_DT_BIAS: tl.constexpr, DT_SOFTPLUS: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """The same scan one token at a time (fla's fused_recurrent style): no intra-chunk work, one
    dependent step per token. Which of the two wins depends on the shape; the benchmark measures both."""
    pid_d = tl.program_id(0)
    seq = tl.program_id(1)
    bos = tl.load(cu_seqlens_ptr + seq).to(tl.int64)
    eos = tl.load(cu_seqlens_ptr + seq + 1).to(tl.int64)
    slot = tl.load(slots_ptr + seq).to(tl.int64)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    mask_d = offs_d < dim
    mask_n = offs_n < dstate
    mask_dn = mask_d[:, None] & mask_n[None, :]
    A = tl.load(A_ptr + offs_d[:, None] * dstate + offs_n[None, :], mask=mask_dn, other=0.0).to(tl.float32)
    A = A * LOG2E
    if HAS_D:
        Dv = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    if HAS_DT_BIAS:
        bias = tl.load(dt_bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    state_ptrs = state_ptr + slot * stride_state + offs_d[:, None] * dstate + offs_n[None, :]
    # a [D, N] mask rather than a scalar one: the interpreter rejects scalar & tensor masks
    has_state = (tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.int64) + slot) >= 0
    h = tl.load(state_ptrs, mask=mask_dn & has_state, other=0.0).to(tl.float32)
    for t in range(bos, eos):
        x = tl.load(x_ptr + t * stride_x + offs_d, mask=mask_d, other=0.0).to(tl.float32)
        dt = tl.load(dt_ptr + t * stride_dt + offs_d, mask=mask_d, other=0.0).to(tl.float32)
        if HAS_DT_BIAS:
            dt += bias
        if DT_SOFTPLUS:
            dt = _softplus(dt)
        Bt = tl.load(B_ptr + t * stride_b + offs_n, mask=mask_n, other=0.0).to(tl.float32)
        Ct = tl.load(C_ptr + t * stride_c + offs_n, mask=mask_n, other=0.0).to(tl.float32)
        h = tl.exp2(dt[:, None] * A) * h + (dt * x)[:, None] * Bt[None, :]
        y = tl.sum(h * Ct[None, :], axis=1)
        if HAS_D:
            y += x * Dv
        if HAS_Z:
            z = tl.load(z_ptr + t * stride_z + offs_d, mask=mask_d, other=0.0).to(tl.float32)
            y = y * z * tl.sigmoid(z)
        tl.store(y_ptr + t * stride_y + offs_d, y.to(y_ptr.dtype.element_ty), mask=mask_d)
    tl.store(state_ptrs, h.to(state_ptr.dtype.element_ty), mask=mask_dn & has_state)


# (block_t, block_d, num_warps) per method; chunk tiles hold block_t x block_d x 16 fp32 values,
# <= 32 per thread per live tile at these sizes. benchmarks/bench_selective_scan.py sweeps others.
DEFAULT_TILES: dict[str, tuple[int, int, int]] = {"chunk": (16, 16, 4), "recurrent": (1, 32, 2)}
DEFAULT_METHOD = "chunk"


def _rows(t: torch.Tensor) -> int:
    assert t.stride(-1) == 1, "last dimension must be contiguous"
    return t.stride(0)


def selective_scan_triton(
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
    method: str | None = None,
    block_t: int | None = None,
    block_d: int | None = None,
    num_warps: int | None = None,
) -> torch.Tensor:
    """Triton path of `selective_scan` (see naive.selective_scan_ref for the contract).

    Row strides of x, dt, z, B, C may be anything (views into in_proj / x_proj outputs work
    without copies); their last dimension must be contiguous. `state` must be contiguous.
    `method`: "chunk" (parallel scan inside time chunks of `block_t`) or "recurrent" (one token
    at a time; `block_t` unused); None takes DEFAULT_METHOD and its tile sizes from DEFAULT_TILES.
    """
    method = method or DEFAULT_METHOD
    if method not in DEFAULT_TILES:
        raise ValueError(f"method must be one of {', '.join(DEFAULT_TILES)}, not {method!r}")
    dflt = DEFAULT_TILES[method]
    block_t, block_d, num_warps = block_t or dflt[0], block_d or dflt[1], num_warps or dflt[2]
    total, dim = x.shape
    dstate = A.shape[1]
    assert state.is_contiguous() and state.shape[1:] == (dim, dstate)
    A = A.float().contiguous()
    n_seqs = slots.shape[0]
    y = torch.empty((total, dim), dtype=x.dtype, device=x.device)
    grid = (triton.cdiv(dim, block_d), n_seqs)
    args = (
        x, dt, A, B, C, D if D is not None else x, z if z is not None else x,
        dt_bias if dt_bias is not None else x, state, y, cu_seqlens, slots,
        _rows(x), _rows(dt), _rows(B), _rows(C), _rows(z) if z is not None else 0,
        y.stride(0), state.stride(0),
        dim, dstate,
    )
    flags = {"HAS_D": D is not None, "HAS_Z": z is not None, "HAS_DT_BIAS": dt_bias is not None,
             "DT_SOFTPLUS": dt_softplus, "BLOCK_D": block_d, "BLOCK_N": triton.next_power_of_2(dstate)}
    if method == "chunk":
        _selective_scan_fwd_kernel[grid](*args, **flags, BLOCK_T=block_t, num_warps=num_warps)
    else:
        _selective_scan_recurrent_kernel[grid](*args, **flags, num_warps=num_warps)
    return y
