"""The differentiable training paths (kernels/*/train.py) against the plain-PyTorch references.

fp32, small shapes, fresh random inputs and a random initial state: outputs, final states and the
gradients of a random projection of the outputs must match the reference's autograd. Tolerance
1e-5 (abs + rel): both sides are fp32 and differ only in summation order.
"""

import pytest
import torch
import torch.nn.functional as F

from archrouter.backends.families import family_module
from archrouter.kernels.mlstm.naive import mlstm_chunkwise_naive
from archrouter.kernels.mlstm.train import mlstm_chunkwise_dense
from archrouter.kernels.selective_scan.naive import causal_conv1d_ref, selective_scan_ref
from archrouter.kernels.selective_scan.train import causal_conv1d_dense, selective_scan_dense
from archrouter.kernels.slstm.naive import slstm_scan_naive
from archrouter.kernels.slstm.train import slstm_scan_dense
from archrouter.kernels.wkv7.naive import naive_wkv7
from archrouter.kernels.wkv7.train import wkv7_dense

TOL = {"atol": 1e-5, "rtol": 1e-5}


def _dense_offsets(B: int, T: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.arange(B), torch.arange(0, B * T + 1, T)


def _assert_same(outs, refs, inputs):
    """Equal outputs, and equal gradients of sum(out * g) for one random g per output."""
    for o, r in zip(outs, refs, strict=True):
        torch.testing.assert_close(o, r.reshape(o.shape), **TOL)
    gs = [torch.randn_like(o) for o in outs]
    ours = torch.autograd.grad(sum((o * g).sum() for o, g in zip(outs, gs, strict=True)), inputs)
    theirs = torch.autograd.grad(sum((r.reshape(g.shape) * g).sum() for r, g in zip(refs, gs, strict=True)), inputs)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, **TOL)


def _leaf(*shape, scale=1.0, shift=0.0):
    return (torch.randn(*shape) * scale + shift).requires_grad_()


def test_selective_scan_dense_matches_reference():
    torch.manual_seed(0)
    B, T, dim, N = 3, 9, 5, 4
    x, dt, z = _leaf(B, T, dim), _leaf(B, T, dim), _leaf(B, T, dim)
    A = (-torch.rand(dim, N) - 0.5).requires_grad_()
    Bm, C, D, bias = _leaf(B, T, N), _leaf(B, T, N), _leaf(dim), _leaf(dim)
    h0 = torch.randn(B, dim, N)
    y, last = selective_scan_dense(x, dt, A, Bm, C, D, z, bias, h0)
    state = h0.clone()
    slots, cu = _dense_offsets(B, T)
    ref = selective_scan_ref(x.reshape(-1, dim), dt.reshape(-1, dim), A, Bm.reshape(-1, N), C.reshape(-1, N), D,
                             z.reshape(-1, dim), bias, state, cu, slots)
    _assert_same([y, last], [ref, state], [x, dt, A, Bm, C, D, z, bias])


def test_causal_conv1d_dense_matches_reference():
    torch.manual_seed(1)
    B, T, dim, width = 2, 7, 6, 4
    x, weight, bias = _leaf(B, T, dim), _leaf(dim, width), _leaf(dim)
    past = torch.randn(B, dim, width - 1)
    y, new_past = causal_conv1d_dense(x, weight, bias, past)
    state = past.clone()
    slots, cu = _dense_offsets(B, T)
    ref = causal_conv1d_ref(x.reshape(-1, dim), weight, bias, state, cu, slots)
    _assert_same([y], [ref], [x, weight, bias])
    torch.testing.assert_close(new_past, state, **TOL)


def test_wkv7_dense_matches_reference():
    torch.manual_seed(2)
    B, T, H, N = 2, 10, 2, 4
    r, k, v = _leaf(B, T, H, N), _leaf(B, T, H, N), _leaf(B, T, H, N)
    w = (-torch.rand(B, T, H, N) * 2).requires_grad_()  # log decays, as RWKV-7 makes them (<= 0)
    kk = F.normalize(torch.randn(B, T, H, N), dim=-1)
    a, b = (-kk).requires_grad_(), (kk * torch.rand(B, T, H, N)).requires_grad_()
    s0 = torch.randn(B, H, N, N)
    y, last = wkv7_dense(r, w, k, v, a, b, s0)
    pool = s0.clone()
    ref = naive_wkv7(r, w, k, v, a, b, pool)
    _assert_same([y, last], [ref, pool], [r, w, k, v, a, b])


@pytest.mark.parametrize("chunk_size", [4, 64])
def test_mlstm_chunkwise_dense_matches_reference(chunk_size):
    torch.manual_seed(3)
    B, T, H, K, V = 2, 11, 2, 4, 3
    q, k, v = _leaf(B, T, H, K), _leaf(B, T, H, K), _leaf(B, T, H, V)
    i, f = _leaf(B, T, H, scale=2.0), _leaf(B, T, H, scale=2.0, shift=2.0)
    C0, n0, m0 = torch.randn(B, H, K, V), torch.randn(B, H, K), torch.randn(B, H)
    h, C1, n1, m1 = mlstm_chunkwise_dense(q, k, v, i, f, C0, n0, m0, chunk_size=chunk_size)
    C, n, m = C0.clone(), n0.clone(), m0.clone()
    slots, cu = _dense_offsets(B, T)
    ref = mlstm_chunkwise_naive(q.reshape(-1, H, K), k.reshape(-1, H, K), v.reshape(-1, H, V), i.reshape(-1, H),
                                f.reshape(-1, H), C, n, m, slots, cu, chunk_size=chunk_size)
    _assert_same([h, C1, n1, m1], [ref, C, n, m], [q, k, v, i, f])


def test_slstm_scan_dense_matches_reference():
    torch.manual_seed(4)
    B, T, NH, D = 2, 8, 2, 3
    x, R, b = _leaf(B, T, 4, NH, D), _leaf(NH, 4, D, D, scale=0.5), _leaf(4, NH, D)
    h0, c0, n0 = torch.rand(B, NH, D), torch.rand(B, NH, D), torch.rand(B, NH, D) + 0.5
    m0 = torch.full((B, NH, D), float("-inf"))  # a fresh state, as the cache starts
    y, last = slstm_scan_dense(x, R, b, h0, c0, n0, m0)
    pool = [s.clone() for s in (h0, c0, n0, m0)]
    slots, cu = _dense_offsets(B, T)
    ref = slstm_scan_naive(x.reshape(B * T, 4, NH, D), R, b, *pool, slots, cu)
    _assert_same([y, *last[:3]], [ref, *pool[:3]], [x, R, b])
    torch.testing.assert_close(last[3], pool[3], **TOL)


@pytest.mark.parametrize("family", ["mamba", "rwkv", "xlstm"])
def test_model_training_forward_matches_inference_forward(family):
    """The backend's grad-mode branch gives the inference path's logits and leaves the same cache."""
    mod = family_module(family)
    model = mod.from_config(mod.random_config("tiny"), seed=5)
    ids = torch.randint(0, 256, (2, 12))
    with torch.no_grad():
        want, want_cache = model(ids, None)
    for p in model.parameters():
        p.requires_grad_(True)
    got, cache = model(ids, None)
    assert got.requires_grad
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)  # fp32 through several layers
    for name, t in want_cache.tensors.items():
        torch.testing.assert_close(cache.tensors[name], t, atol=1e-4, rtol=1e-4)
