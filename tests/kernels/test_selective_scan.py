"""Triton selective scan / state update / causal conv1d vs their plain-PyTorch references.

The Triton paths run on the CPU under TRITON_INTERPRET=1 at small shapes; block sizes are
set small so sequences span several chunks and end mid-block. Inputs are fresh each run.
"""

from __future__ import annotations

import pytest
import torch

if torch.cuda.is_available():  # these run the Triton paths interpreted on CPU tensors (tests/conftest.py)
    pytest.skip("CPU-interpreter kernel tests; on the GPU the benchmarks check these kernels",
                allow_module_level=True)

pytest.importorskip("triton")

from archrouter.kernels.selective_scan import (  # noqa: E402
    causal_conv1d_ref,
    causal_conv1d_update_ref,
    selective_scan_ref,
    selective_state_update_ref,
)
from archrouter.kernels.selective_scan.conv1d import causal_conv1d_triton, causal_conv1d_update_triton  # noqa: E402
from archrouter.kernels.selective_scan.scan import selective_scan_triton  # noqa: E402
from archrouter.kernels.selective_scan.step import selective_state_update_triton  # noqa: E402

# fp32 paths differ only in exp2-vs-exp and log(1+e^x)-vs-log1p rounding: ~1e-6 relative per
# step, a few 1e-6 absolute after a dozen steps on O(1) values.
ATOL_FP32 = 1e-4
# bf16 inputs, fp32 state and math in both paths: the only difference is the rounding of the
# bf16 output (2^-8 relative), so compare at bf16 resolution.
ATOL_BF16, RTOL_BF16 = 2e-2, 2e-2


def _cu(lengths: list[int]) -> torch.Tensor:
    return torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)


def _problem(lengths: list[int], dim: int, dstate: int, dtype=torch.float32, pool: int = 6):
    """Random packed inputs, with x/z and dt/B/C as strided views like the model's projections."""
    total = sum(lengths)
    xz = torch.randn(total, 2 * dim).to(dtype)
    dbc = torch.randn(total, dim + 2 * dstate).to(dtype)
    return {
        "x": xz[:, :dim], "z": xz[:, dim:],
        "dt": dbc[:, :dim], "B": dbc[:, dim : dim + dstate], "C": dbc[:, dim + dstate :],
        "A": -torch.exp(torch.randn(dim, dstate)),  # A = -exp(A_log)
        "D": torch.randn(dim), "dt_bias": torch.randn(dim) * 0.5,
        "state": torch.randn(pool, dim, dstate),
    }


def _scan(fn, p, state, cu, slots, **kw):
    return fn(p["x"], p["dt"], p["A"], p["B"], p["C"], p["D"], p["z"], p["dt_bias"], state, cu, slots, **kw)


# segmented: 4-token chunks in 8-token segments, so sequences span several of both
METHODS = [{"method": "chunk"}, {"method": "recurrent"}, {"method": "segmented", "seg_len": 8}]


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m["method"])
@pytest.mark.parametrize("lengths", [[7, 1, 13], [5], [16, 3], [0, 21]])
def test_scan_matches_reference_varlen_with_states(lengths, method):
    dim, dstate = 12, 5  # neither a power of two: masked channels and state columns
    p = _problem(lengths, dim, dstate)
    cu = _cu(lengths)
    slots = torch.randperm(6)[: len(lengths)].to(torch.int32)
    s_ref, s_tri = p["state"].clone(), p["state"].clone()
    y_ref = _scan(selective_scan_ref, p, s_ref, cu, slots)
    y_tri = _scan(selective_scan_triton, p, s_tri, cu, slots, **method, block_t=4, block_d=8)
    assert (y_tri - y_ref).abs().max() < ATOL_FP32
    assert (s_tri - s_ref).abs().max() < ATOL_FP32
    untouched = sorted(set(range(6)) - set(slots.tolist()))
    assert torch.equal(s_tri[untouched], p["state"][untouched])  # other pool rows bit-identical


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m["method"])
def test_scan_bf16_inputs_fp32_state(method):
    lengths = [9, 4]
    p = _problem(lengths, 8, 4, dtype=torch.bfloat16)
    cu, slots = _cu(lengths), torch.tensor([1, 4], dtype=torch.int32)
    s_ref, s_tri = p["state"].clone(), p["state"].clone()
    y_ref = _scan(selective_scan_ref, p, s_ref, cu, slots)
    y_tri = _scan(selective_scan_triton, p, s_tri, cu, slots, **method, block_t=4, block_d=4)
    assert y_tri.dtype == torch.bfloat16 and s_tri.dtype == torch.float32
    torch.testing.assert_close(y_tri.float(), y_ref.float(), atol=ATOL_BF16, rtol=RTOL_BF16)
    assert (s_tri - s_ref).abs().max() < ATOL_FP32  # fp32 state from identical bf16 inputs


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m["method"])
def test_scan_packing_never_touches_other_states(method):
    """fla #1272: a sequence's output and state must not depend on what it is packed with."""
    lengths = [3, 10, 6]
    dim, dstate = 8, 4
    p = _problem(lengths, dim, dstate)
    cu, slots = _cu(lengths), torch.tensor([2, 0, 5], dtype=torch.int32)
    packed_state = p["state"].clone()
    y_packed = _scan(selective_scan_triton, p, packed_state, cu, slots, **method, block_t=4, block_d=8)
    bounds = zip(cu[:-1].tolist(), cu[1:].tolist(), strict=True)
    for i, (slot, (bos, eos)) in enumerate(zip(slots.tolist(), bounds, strict=True)):
        alone = {k: (v[bos:eos] if k in ("x", "z", "dt", "B", "C") else v) for k, v in p.items()}
        state = p["state"].clone()
        y_alone = _scan(selective_scan_triton, alone, state, _cu([eos - bos]), slots[i : i + 1],
                        **method, block_t=4, block_d=8)
        assert torch.equal(y_packed[bos:eos], y_alone), f"sequence {i} changed by its neighbours"
        assert torch.equal(packed_state[slot], state[slot])


def test_scan_carries_state_across_calls_and_negative_slot():
    lengths = [11]
    dim, dstate = 8, 4
    p = _problem(lengths, dim, dstate)
    slot = torch.tensor([3], dtype=torch.int32)
    whole_state = p["state"].clone()
    y_whole = _scan(selective_scan_triton, p, whole_state, _cu(lengths), slot, block_t=4, block_d=8)
    split_state = p["state"].clone()
    ys = []
    for bos, eos in [(0, 5), (5, 6), (6, 11)]:
        part = {k: (v[bos:eos] if k in ("x", "z", "dt", "B", "C") else v) for k, v in p.items()}
        ys.append(_scan(selective_scan_triton, part, split_state, _cu([eos - bos]), slot,
                        block_t=4, block_d=8))
    assert (torch.cat(ys) - y_whole).abs().max() < ATOL_FP32
    assert (split_state - whole_state).abs().max() < ATOL_FP32
    # a negative slot starts from zeros and writes nothing
    pool = p["state"].clone()
    y_none = _scan(selective_scan_triton, p, pool, _cu(lengths), torch.tensor([-1], dtype=torch.int32),
                   block_t=4, block_d=8)
    zero_pool = torch.zeros_like(p["state"])
    y_zero = _scan(selective_scan_ref, p, zero_pool, _cu(lengths), torch.tensor([0], dtype=torch.int32))
    assert torch.equal(pool, p["state"])
    assert (y_none - y_zero).abs().max() < ATOL_FP32


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_step_matches_reference_with_padding_rows(dtype):
    dim, dstate, n = 20, 16, 5
    p = _problem([n], dim, dstate, dtype=dtype, pool=8)
    slots = torch.tensor([6, -1, 0, 3, -1], dtype=torch.int32)  # -1: padded rows of a fixed batch
    s_ref, s_tri = p["state"].clone(), p["state"].clone()
    args = (p["x"], p["dt"], p["A"], p["B"], p["C"], p["D"], p["z"], p["dt_bias"])
    y_ref = selective_state_update_ref(*args, s_ref, slots)
    y_tri = selective_state_update_triton(*args, s_tri, slots, block_d=8)
    valid = slots >= 0
    if dtype == torch.float32:
        assert (y_tri[valid] - y_ref[valid]).abs().max() < ATOL_FP32
    else:
        torch.testing.assert_close(y_tri[valid].float(), y_ref[valid].float(), atol=ATOL_BF16, rtol=RTOL_BF16)
    assert (s_tri - s_ref).abs().max() < ATOL_FP32
    untouched = [1, 2, 4, 5, 7]
    assert torch.equal(s_tri[untouched], p["state"][untouched])


def test_steps_equal_scan():
    """Decoding token by token through the step kernel equals one prefill scan."""
    T, dim, dstate = 6, 8, 4
    p = _problem([T], dim, dstate)
    slot = torch.tensor([2], dtype=torch.int32)
    scan_state = p["state"].clone()
    y_scan = _scan(selective_scan_triton, p, scan_state, _cu([T]), slot, block_t=4, block_d=8)
    step_state = p["state"].clone()
    for t in range(T):
        r = slice(t, t + 1)
        y = selective_state_update_triton(p["x"][r], p["dt"][r], p["A"], p["B"][r], p["C"][r], p["D"],
                                          p["z"][r], p["dt_bias"], step_state, slot, block_d=8)
        assert (y - y_scan[r]).abs().max() < ATOL_FP32
    assert (step_state - scan_state).abs().max() < ATOL_FP32


def _conv_problem(lengths, dim, width=4, pool=5, dtype=torch.float32):
    total = sum(lengths)
    xz = torch.randn(total, 2 * dim).to(dtype)
    return xz[:, :dim], torch.randn(dim, width), torch.randn(dim), torch.randn(pool, dim, width - 1).to(dtype)


@pytest.mark.parametrize("lengths", [[7, 1, 2, 13], [3]])  # shorter than width-1: history from the state
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_conv1d_matches_reference(lengths, dtype):
    dim = 12
    x, w, b, state = _conv_problem(lengths, dim, dtype=dtype)
    cu = _cu(lengths)
    slots = torch.tensor([4, 0, -1, 2][: len(lengths)], dtype=torch.int32)
    s_ref, s_tri = state.clone(), state.clone()
    y_ref = causal_conv1d_ref(x, w, b, s_ref, cu, slots)
    y_tri = causal_conv1d_triton(x, w, b, s_tri, cu, slots, block_t=4, block_d=8)
    if dtype == torch.float32:
        assert (y_tri - y_ref).abs().max() < 1e-5  # 4-tap sums, fp32
    else:
        torch.testing.assert_close(y_tri.float(), y_ref.float(), atol=ATOL_BF16, rtol=RTOL_BF16)
    assert torch.equal(s_tri, s_ref)  # the state is a copy of inputs: exact
    assert torch.equal(s_tri[[1, 3]], state[[1, 3]])


def test_conv1d_update_matches_reference_and_prefill():
    dim, T = 12, 5
    x, w, b, state = _conv_problem([T], dim)
    slots = torch.tensor([3], dtype=torch.int32)
    s_pre = state.clone()
    y_pre = causal_conv1d_triton(x, w, b, s_pre, _cu([T]), slots, block_t=4, block_d=8)
    s_ref, s_tri = state.clone(), state.clone()
    for t in range(T):
        y_r = causal_conv1d_update_ref(x[t : t + 1], w, b, s_ref, slots)
        y_t = causal_conv1d_update_triton(x[t : t + 1], w, b, s_tri, slots, block_d=8)
        assert (y_t - y_r).abs().max() < 1e-5
        assert (y_t - y_pre[t : t + 1]).abs().max() < 1e-5
    assert torch.equal(s_tri, s_ref) and torch.equal(s_tri, s_pre)
    # padded rows (slot -1) leave the pool alone
    pool = state.clone()
    causal_conv1d_update_triton(x[:2], w, b, pool, torch.tensor([-1, -1], dtype=torch.int32), block_d=8)
    assert torch.equal(pool, state)
