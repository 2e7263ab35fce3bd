"""sLSTM fused Triton recurrence (interpreted on CPU) against the plain-PyTorch recurrence."""

import os

import pytest
import torch

if torch.cuda.is_available():  # these run the Triton paths interpreted on CPU tensors (tests/conftest.py)
    pytest.skip("CPU-interpreter kernel tests; on the GPU the benchmarks check these kernels",
                allow_module_level=True)

from archrouter.kernels.slstm import slstm_scan, slstm_step
from archrouter.kernels.slstm.fused_recurrent import slstm_scan_triton, slstm_step_triton
from archrouter.kernels.slstm.naive import slstm_scan_naive, slstm_step_naive

# fp32; same operations in the same order except the R h reduction (tl.sum vs einsum) and tanh
# written through exp: a few ulp per step, compounded over <= 40 steps: 1e-5.
TOL = dict(rtol=1e-5, atol=1e-5)


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(int.from_bytes(os.urandom(4), "little"))


def inputs(lens, NH, D, gen, scale=2.0):
    T = sum(lens)
    cu = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32)
    x = torch.randn(T, 4, NH, D, generator=gen) * scale
    R = torch.randn(NH, 4, D, D, generator=gen) / D**0.5
    b = torch.randn(4, NH, D, generator=gen)
    return x, R, b, cu


def pool(P, NH, D, gen, fresh=()):
    h, c = torch.randn(P, NH, D, generator=gen), torch.randn(P, NH, D, generator=gen)
    n, m = torch.rand(P, NH, D, generator=gen) + 0.5, torch.randn(P, NH, D, generator=gen)
    for r in fresh:  # a fresh state: zeros and m = -inf
        h[r], c[r], n[r], m[r] = 0.0, 0.0, 0.0, float("-inf")
    return h, c, n, m


def clone(s):
    return tuple(t.clone() for t in s)


@pytest.mark.parametrize("D", [16, 24, 64])
def test_scan_matches_reference(gen, D):
    NH, lens = 2, [7, 1, 19]
    x, R, b, cu = inputs(lens, NH, D, gen)
    slots = torch.tensor([3, 0, 1])
    state = pool(5, NH, D, gen, fresh=[0])
    ref, tri = clone(state), clone(state)
    y_ref = slstm_scan_naive(x, R, b, *ref, slots, cu)
    y_tri = slstm_scan_triton(x, R, b, *tri, slots, cu)
    torch.testing.assert_close(y_tri, y_ref, **TOL)
    for a, r, s in zip(tri, ref, state, strict=True):
        torch.testing.assert_close(a, r, **TOL)
        assert torch.equal(a[[2, 4]], s[[2, 4]])  # rows no sequence owns: untouched


def test_large_preactivations_stay_finite(gen):
    NH, D, lens = 2, 16, [25, 6]
    x, R, b, cu = inputs(lens, NH, D, gen, scale=80.0)
    state = pool(2, NH, D, gen, fresh=[0, 1])
    ref, tri = clone(state), clone(state)
    y_ref = slstm_scan_naive(x, R, b, *ref, torch.arange(2), cu)
    y_tri = slstm_scan_triton(x, R, b, *tri, torch.arange(2), cu)
    assert torch.isfinite(y_tri).all() and all(torch.isfinite(t).all() for t in tri)
    torch.testing.assert_close(y_tri, y_ref, **TOL)


def test_scan_then_steps_equals_one_scan(gen):
    NH, D, T, split = 2, 32, 23, 15
    x, R, b, cu = inputs([T], NH, D, gen)
    whole, parts = pool(1, NH, D, gen, fresh=[0]), None
    parts = clone(whole)
    slot = torch.tensor([0])
    y = slstm_scan_triton(x, R, b, *whole, slot, cu)
    ys = [slstm_scan_triton(x[:split], R, b, *parts, slot, torch.tensor([0, split], dtype=torch.int32))]
    for t in range(split, T):
        ys.append(slstm_step_triton(x[t : t + 1], R, b, *parts, slot))
    torch.testing.assert_close(torch.cat(ys), y, **TOL)


def test_step_and_public_functions(gen):
    NH, D, N = 3, 16, 4
    x, R, b, _ = inputs([N], NH, D, gen)
    slots = torch.tensor([2, 5, 0, 3])
    state = pool(6, NH, D, gen, fresh=[5])
    a, r, p = clone(state), clone(state), clone(state)
    torch.testing.assert_close(
        slstm_step_triton(x, R, b, *a, slots), slstm_step_naive(x, R, b, *r, slots), **TOL
    )
    torch.testing.assert_close(
        slstm_step(x, R, b, *p, slots), slstm_step_naive(x, R, b, *state, slots), **TOL
    )
    cu = torch.tensor([0, 1, 4], dtype=torch.int32)
    s1, s2 = pool(2, NH, D, gen), None
    s2 = clone(s1)
    torch.testing.assert_close(
        slstm_scan(x, R, b, *s1, torch.arange(2), cu),
        slstm_scan_naive(x, R, b, *s2, torch.arange(2), cu),
        **TOL,
    )
