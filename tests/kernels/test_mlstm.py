"""mLSTM Triton kernels (interpreted on CPU) against the plain-PyTorch recurrence."""

import os

import pytest
import torch

if torch.cuda.is_available():  # these run the Triton paths interpreted on CPU tensors (tests/conftest.py)
    pytest.skip("CPU-interpreter kernel tests; on the GPU the benchmarks check these kernels",
                allow_module_level=True)

from archrouter.kernels.mlstm import mlstm_chunkwise, mlstm_step
from archrouter.kernels.mlstm.chunk import mlstm_chunkwise_triton
from archrouter.kernels.mlstm.naive import mlstm_chunkwise_naive, mlstm_recurrent_naive, mlstm_step_naive
from archrouter.kernels.mlstm.step import mlstm_step_triton

# fp32 throughout; the chunkwise form reorders sums (q.C vs per-step updates) and both divide by
# the same normaliser, which can be small: 5e-4 relative / 5e-4 absolute on outputs of size O(1..10)
# (a rare element near a small normaliser exceeded 1e-4 in one run of hundreds).
TOL = dict(rtol=5e-4, atol=5e-4)


def packed(lens, H, K, V, gen, gate_scale=3.0):
    T = sum(lens)
    cu = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32)
    q, k = torch.randn(T, H, K, generator=gen), torch.randn(T, H, K, generator=gen)
    v = torch.randn(T, H, V, generator=gen)
    i = torch.randn(T, H, generator=gen) * gate_scale
    f = torch.randn(T, H, generator=gen) * gate_scale + 2.0
    return q, k, v, i, f, cu


def pool(P, H, K, V, gen):
    C = torch.randn(P, H, K, V, generator=gen)
    n = torch.randn(P, H, K, generator=gen)
    m = torch.randn(P, H, generator=gen)
    return C, n, m


def clone(state):
    return tuple(t.clone() for t in state)


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(int.from_bytes(os.urandom(4), "little"))


@pytest.mark.parametrize("K,V,chunk", [(16, 32, 16), (32, 16, 64), (24, 40, 16)])
def test_chunkwise_matches_recurrence(gen, K, V, chunk):
    H, lens, P = 2, [5, 37, 1, 16], 6
    q, k, v, i, f, cu = packed(lens, H, K, V, gen)
    slots = torch.tensor([4, 0, 5, 2])
    state = pool(P, H, K, V, gen)
    ref_state, tri_state, cpu_state = clone(state), clone(state), clone(state)
    h_ref = mlstm_recurrent_naive(q, k, v, i, f, *ref_state, slots, cu)
    h_tri = mlstm_chunkwise_triton(q, k, v, i, f, *tri_state, slots, cu, chunk_size=chunk)
    h_cpu = mlstm_chunkwise_naive(q, k, v, i, f, *cpu_state, slots, cu, chunk_size=chunk)
    torch.testing.assert_close(h_tri, h_ref, **TOL)
    torch.testing.assert_close(h_cpu, h_ref, **TOL)
    for a, b, c in zip(tri_state, ref_state, cpu_state, strict=True):
        torch.testing.assert_close(a, b, **TOL)
        torch.testing.assert_close(c, b, **TOL)
    # rows no sequence owns are untouched, bit for bit
    for a, s in zip(tri_state, state, strict=True):
        assert torch.equal(a[[1, 3]], s[[1, 3]])


def test_packing_equals_separate_runs(gen):
    """A packed batch gives each sequence exactly what it gets alone: nothing leaks across."""
    H, K, V, lens = 2, 16, 16, [9, 3, 20]
    q, k, v, i, f, cu = packed(lens, H, K, V, gen)
    state = pool(3, H, K, V, gen)
    together = clone(state)
    h = mlstm_chunkwise_triton(q, k, v, i, f, *together, torch.arange(3), cu, chunk_size=16)
    for s in range(3):
        alone = clone(state)
        a, b = int(cu[s]), int(cu[s + 1])
        cu1 = torch.tensor([0, b - a], dtype=torch.int32)
        hs = mlstm_chunkwise_triton(
            q[a:b], k[a:b], v[a:b], i[a:b], f[a:b], *alone, torch.tensor([s]), cu1, chunk_size=16
        )
        torch.testing.assert_close(h[a:b], hs, rtol=1e-6, atol=1e-6)
        for x, y in zip(together, alone, strict=True):
            torch.testing.assert_close(x[s], y[s], rtol=1e-6, atol=1e-6)


# A row whose stabiliser m drops below -88 has exp(-m) = inf in its denominator, giving h = 0, as in
# the reference (the true h is ~exp(m) there); numpy, which interprets the kernel, warns about it.
@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")
def test_large_gate_preactivations_stay_finite(gen):
    """exp(i) would overflow fp32 past i ~ 88: the max stabiliser must keep every exponent <= 0."""
    H, K, V, lens = 2, 16, 16, [33, 7]
    q, k, v, i, f, cu = packed(lens, H, K, V, gen, gate_scale=60.0)
    state = (torch.zeros(2, H, K, V), torch.zeros(2, H, K), torch.zeros(2, H))
    ref, tri = clone(state), clone(state)
    h_ref = mlstm_recurrent_naive(q, k, v, i, f, *ref, torch.arange(2), cu)
    h_tri = mlstm_chunkwise_triton(q, k, v, i, f, *tri, torch.arange(2), cu, chunk_size=16)
    assert torch.isfinite(h_tri).all() and all(torch.isfinite(t).all() for t in tri)
    # gates of +-60 give outputs in the hundreds, where chunkwise and recurrent fp32 sums differ in
    # the last bits element-wise; judge them by relative norm error, which fp32 keeps far below 1e-4
    rel = lambda a, b: float((a - b).norm() / b.norm().clamp_min(1e-30))  # noqa: E731
    assert rel(h_tri, h_ref) < 1e-4
    for a, b in zip(tri, ref, strict=True):
        assert rel(a, b) < 1e-4
    # and one decode step on top of those states
    q1, k1, v1 = q[:2], k[:2], v[:2]
    i1, f1 = torch.tensor([[80.0, -80.0], [-80.0, 80.0]]), torch.tensor([[-70.0, 70.0], [70.0, -70.0]])
    h1 = mlstm_step_triton(q1, k1, v1, i1, f1, *tri, torch.arange(2))
    h1_ref = mlstm_step_naive(q1, k1, v1, i1, f1, *ref, torch.arange(2))
    assert torch.isfinite(h1).all()
    torch.testing.assert_close(h1, h1_ref, **TOL)


@pytest.mark.parametrize("K,V", [(16, 16), (48, 24), (128, 64)])
def test_step_matches_reference(gen, K, V):
    H, N, P = 3, 5, 8
    q, k, v, i, f, _ = packed([N], H, K, V, gen)
    slots = torch.tensor([7, 1, 3, 0, 6])
    state = pool(P, H, K, V, gen)
    ref, tri = clone(state), clone(state)
    h_ref = mlstm_step_naive(q, k, v, i, f, *ref, slots)
    h_tri = mlstm_step_triton(q, k, v, i, f, *tri, slots)
    torch.testing.assert_close(h_tri, h_ref, **TOL)
    for a, b, s in zip(tri, ref, state, strict=True):
        torch.testing.assert_close(a, b, **TOL)
        assert torch.equal(a[[2, 4, 5]], s[[2, 4, 5]])


def test_steps_continue_a_prefill(gen):
    """Prefill then token-by-token decode equals one prefill over the whole sequence."""
    H, K, V, T, split = 2, 16, 32, 29, 21
    q, k, v, i, f, cu = packed([T], H, K, V, gen)
    zero = (torch.zeros(1, H, K, V), torch.zeros(1, H, K), torch.zeros(1, H))
    whole, parts = clone(zero), clone(zero)
    slot = torch.tensor([0])
    h_whole = mlstm_chunkwise_triton(q, k, v, i, f, *whole, slot, cu, chunk_size=16)
    cu_a = torch.tensor([0, split], dtype=torch.int32)
    hs = [
        mlstm_chunkwise_triton(
            q[:split], k[:split], v[:split], i[:split], f[:split], *parts, slot, cu_a, chunk_size=16
        )
    ]
    for t in range(split, T):
        hs.append(
            mlstm_step_triton(
                q[t : t + 1], k[t : t + 1], v[t : t + 1], i[t : t + 1], f[t : t + 1], *parts, slot
            )
        )
    torch.testing.assert_close(torch.cat(hs), h_whole, **TOL)


def test_public_functions_take_reference_on_cpu(gen):
    H, K, V = 2, 16, 16
    q, k, v, i, f, cu = packed([6, 4], H, K, V, gen)
    a, b = pool(2, H, K, V, gen), None
    b = clone(a)
    torch.testing.assert_close(
        mlstm_chunkwise(q, k, v, i, f, *a, torch.arange(2), cu),
        mlstm_recurrent_naive(q, k, v, i, f, *b, torch.arange(2), cu),
        **TOL,
    )
    torch.testing.assert_close(
        mlstm_step(q[:2], k[:2], v[:2], i[:2], f[:2], *a, torch.arange(2)),
        mlstm_step_naive(q[:2], k[:2], v[:2], i[:2], f[:2], *b, torch.arange(2)),
        **TOL,
    )


def test_dense_layout_matches_host_layout():
    from archrouter.kernels.mlstm.chunk import chunk_layout, dense_chunk_layout

    for B, T in [(1, 1), (3, 64), (2, 65), (4, 130)]:
        cu = torch.arange(0, (B + 1) * T, T, dtype=torch.int32)
        for a, b in zip(dense_chunk_layout(B, T, 64, cu.device), chunk_layout(cu, 64), strict=True):
            assert torch.equal(a, b), (B, T)
