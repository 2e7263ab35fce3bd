"""Triton selective scan for prefill over packed variable-length sequences.

chunk: one program owns (sequence, block of channels) and walks the sequence in time chunks.
Inside a chunk the linear recurrence h_t = a_t h_{t-1} + b_t runs as a parallel
`tl.associative_scan` over a [BLOCK_T, BLOCK_D, BLOCK_N] tile, then the carried state is folded
in (h_t = prod(a) h_0 + scan(b)). softplus(dt + bias), the D skip and the silu(z) gate are fused.
Positions past a sequence's end get dt = 0 (a = 1, b = 0), so a chunk's tail never changes the
state; the state is read from and written to `state[slot]` only (negative slot: zeros, no write).

segmented: the same kernel, with each sequence also cut into segments that run in parallel
(few long sequences would otherwise leave most SMs idle). Pass 1 reduces each segment from a
zero state to its end state and sum(dt); pass 2 starts each segment from the pool state folded
through its predecessors' summaries (exp(A sum(dt)) h + h_end) and writes outputs; the last
segment writes the pool.

recurrent: one token at a time (fla's fused_recurrent style), for comparison in the benchmark.
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
    cu_seqlens_ptr, slots_ptr, ws_h_ptr, ws_dt_ptr,
    stride_x, stride_dt, stride_b, stride_c, stride_z, stride_y, stride_state,
    dim, dstate, seg_len, max_segs,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_DT_BIAS: tl.constexpr, DT_SOFTPLUS: tl.constexpr,
    MODE: tl.constexpr,  # 0: whole sequences; 1: per-segment summaries; 2: segments with carried-in state
    BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid_d = tl.program_id(0)
    seq = tl.program_id(1)
    seg = tl.program_id(2)
    bos = tl.load(cu_seqlens_ptr + seq).to(tl.int64)
    seqlen = (tl.load(cu_seqlens_ptr + seq + 1) - tl.load(cu_seqlens_ptr + seq)).to(tl.int32)
    slot = tl.load(slots_ptr + seq).to(tl.int64)
    if MODE == 0:
        start = 0
        stop = seqlen
    else:
        start = seg * seg_len
        stop = tl.minimum(start + seg_len, seqlen)

    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    offs_t = tl.arange(0, BLOCK_T)
    mask_d = offs_d < dim
    mask_n = offs_n < dstate
    mask_dn = mask_d[:, None] & mask_n[None, :]

    if start < stop:
        # exp(dt A) = exp2(dt A log2 e); fold log2 e into A once
        A = tl.load(A_ptr + offs_d[:, None] * dstate + offs_n[None, :], mask=mask_dn, other=0.0)
        A = A.to(tl.float32) * LOG2E
        if HAS_D:
            Dv = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
        if HAS_DT_BIAS:
            bias = tl.load(dt_bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)

        state_ptrs = state_ptr + slot * stride_state + offs_d[:, None] * dstate + offs_n[None, :]
        # a [D, N] mask rather than a scalar one: the interpreter rejects scalar & tensor masks
        has_state = (tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.int64) + slot) >= 0
        # workspace rows of this (sequence, segment): h at the segment's end from a zero start, and sum(dt)
        ws_row = seq.to(tl.int64) * max_segs + seg
        ws_h = ws_h_ptr + ws_row * dim * dstate + offs_d[:, None] * dstate + offs_n[None, :]
        ws_dt = ws_dt_ptr + ws_row * dim + offs_d
        if MODE == 1:
            h = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
            dt_sum = tl.zeros([BLOCK_D], dtype=tl.float32)
        else:
            h = tl.load(state_ptrs, mask=mask_dn & has_state, other=0.0).to(tl.float32)
        if MODE == 2:
            # fold in the earlier segments: h <- exp(A sum(dt)) h + h_end, one segment at a time
            for s in range(0, seg):
                prev = (ws_row - seg + s)
                d_sum = tl.load(ws_dt_ptr + prev * dim + offs_d, mask=mask_d, other=0.0)
                h_end = tl.load(ws_h_ptr + prev * dim * dstate + offs_d[:, None] * dstate + offs_n[None, :],
                                mask=mask_dn, other=0.0)
                h = tl.exp2(d_sum[:, None] * A) * h + h_end

        for t0 in range(start, stop, BLOCK_T):
            # 64-bit scalar row base per chunk, 32-bit offsets inside it (fewer registers than 64-bit tiles)
            row0 = bos + t0
            mask_t = (t0 + offs_t) < stop
            mask_td = mask_t[:, None] & mask_d[None, :]
            mask_tn = mask_t[:, None] & mask_n[None, :]
            x = tl.load(x_ptr + row0 * stride_x + (offs_t[:, None] * stride_x + offs_d[None, :]),
                        mask=mask_td, other=0.0).to(tl.float32)
            dt = tl.load(dt_ptr + row0 * stride_dt + (offs_t[:, None] * stride_dt + offs_d[None, :]),
                         mask=mask_td, other=0.0).to(tl.float32)
            if HAS_DT_BIAS:
                dt = dt + bias[None, :]
            if DT_SOFTPLUS:
                dt = _softplus(dt)
            dt = tl.where(mask_td, dt, 0.0)  # identity step past the end: a = 1, b = 0
            Bt = tl.load(B_ptr + row0 * stride_b + (offs_t[:, None] * stride_b + offs_n[None, :]),
                         mask=mask_tn, other=0.0).to(tl.float32)
            a = tl.exp2(dt[:, :, None] * A[None, :, :])
            b = (dt * x)[:, :, None] * Bt[:, None, :]
            if MODE == 1:
                # only the segment's end state is needed: a reduction, not a scan
                a_tot, b_tot = tl.reduce((a, b), 0, _combine)
                h = a_tot * h + b_tot
                dt_sum += tl.sum(dt, axis=0)
            else:
                Ct = tl.load(C_ptr + row0 * stride_c + (offs_t[:, None] * stride_c + offs_n[None, :]),
                             mask=mask_tn, other=0.0).to(tl.float32)
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

        if MODE == 1:
            tl.store(ws_h, h, mask=mask_dn)
            tl.store(ws_dt, dt_sum, mask=mask_d)
        elif stop == seqlen:  # the segment (or whole sequence) that ends the sequence owns its state
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
DEFAULT_TILES: dict[str, tuple[int, int, int]] = {"chunk": (16, 16, 4), "segmented": (16, 16, 4),
                                                  "recurrent": (1, 32, 2)}
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
    max_seqlen: int | None = None,
    seg_len: int | None = None,
) -> torch.Tensor:
    """Triton path of `selective_scan` (see naive.selective_scan_ref for the contract).

    Row strides of x, dt, z, B, C may be anything (views into in_proj / x_proj outputs work
    without copies); their last dimension must be contiguous. `state` must be contiguous.
    `method`: "chunk" (parallel scan inside time chunks of `block_t`), "segmented" (the same, with
    each sequence also split into `seg_len`-token segments run in parallel: a summary pass, then
    each segment folds in its predecessors' summaries) or "recurrent" (one token at a time);
    None: DEFAULT_METHOD, switched to "segmented" when sequences x channel blocks are too few to
    fill the GPU and the sequences are long. `max_seqlen` sizes the segmented grid (else read
    from cu_seqlens with a device sync).
    """
    if method is None:
        method = DEFAULT_METHOD
        if method == "chunk" and x.is_cuda and _too_few_programs(slots.shape[0], x.shape[1]):
            max_seqlen = _max_seqlen(cu_seqlens, max_seqlen)
            if max_seqlen >= 2 * _MIN_SEG_LEN:
                method = "segmented"
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
    if method == "recurrent":
        _selective_scan_recurrent_kernel[grid](*args, **flags, num_warps=num_warps)
        return y
    if method == "chunk":
        _selective_scan_fwd_kernel[grid](*args[:12], x, x, *args[12:], 0, 1, **flags, MODE=0, BLOCK_T=block_t,
                                         num_warps=num_warps)
        return y
    max_seqlen = _max_seqlen(cu_seqlens, max_seqlen)
    if seg_len is None:  # ~_FILL_PROGRAMS programs in all
        segs = triton.cdiv(_FILL_PROGRAMS, n_seqs * triton.cdiv(dim, block_d))
        seg_len = max(_MIN_SEG_LEN, triton.cdiv(max_seqlen, segs))
    seg_len = triton.cdiv(seg_len, block_t) * block_t
    max_segs = max(1, triton.cdiv(max_seqlen, seg_len))
    ws_h = torch.empty((n_seqs, max_segs, dim, dstate), dtype=torch.float32, device=x.device)
    ws_dt = torch.empty((n_seqs, max_segs, dim), dtype=torch.float32, device=x.device)
    grid3 = (*grid, max_segs)
    for mode in (1, 2):
        _selective_scan_fwd_kernel[grid3](*args[:12], ws_h, ws_dt, *args[12:], seg_len, max_segs, **flags,
                                          MODE=mode, BLOCK_T=block_t, num_warps=num_warps)
    return y


# a launch with fewer (sequence, channel block) programs than this leaves SMs idle (H100: 132 SMs)
_FILL_PROGRAMS = 512
_MIN_SEG_LEN = 512


def _too_few_programs(n_seqs: int, dim: int) -> bool:
    return n_seqs * triton.cdiv(dim, DEFAULT_TILES["chunk"][1]) < _FILL_PROGRAMS


def _max_seqlen(cu_seqlens: torch.Tensor, max_seqlen: int | None) -> int:
    if max_seqlen is not None:
        return max_seqlen
    return int((cu_seqlens[1:] - cu_seqlens[:-1]).max()) if cu_seqlens.numel() > 1 else 0
