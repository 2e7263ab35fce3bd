"""The Triton training kernels (kernels/*/train_triton.py) against the torch training paths.

Compiled on a CUDA device, run by the interpreter on CPU (tests/conftest.py sets TRITON_INTERPRET=1
when there is no GPU). fp32, odd lengths, channel / row counts that leave a partial block, a random
initial state: outputs, final states and every input gradient (of a random projection of both
outputs, and of the outputs alone) must match `impl="torch"`, which test_train_paths.py checks
against the plain references. Tolerance 1e-4 relative to each tensor's largest entry: both sides are
fp32 and differ in summation order and exp2-vs-exp rounding.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("triton")

from archrouter.kernels.selective_scan.train import selective_scan_dense  # noqa: E402
from archrouter.kernels.wkv7.train import wkv7_dense  # noqa: E402

DEV = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(autouse=True)
def _fp32_matmuls():
    """The torch path's bmm / einsum in full fp32 on a GPU (archrouter.evals.training turns TF32 on process-wide)."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def _close(got: torch.Tensor, want: torch.Tensor, rel: float = 1e-4) -> None:
    assert got.shape == want.shape and got.dtype == want.dtype
    err = float((got - want).detach().abs().max())
    top = float(want.detach().abs().max())
    assert err <= rel * max(1.0, top), (err, top)


def _compare(fn, inputs: list[torch.Tensor], use_last: bool, rel: float = 1e-4) -> None:
    """fn(impl) -> (y, last); same outputs and the same gradients of sum(y gy) (+ sum(last gl))."""
    results = {}
    for impl in ("torch", "triton"):
        y, last = fn(impl)
        gen = torch.Generator().manual_seed(7)  # the same upstream gradients for both (fresh, dense layout)
        gy = torch.randn(y.shape, generator=gen).to(DEV)
        gl = torch.randn(last.shape, generator=gen).to(DEV)
        loss = (y.float() * gy).sum() + ((last * gl).sum() if use_last else 0)
        results[impl] = (y, last, *torch.autograd.grad(loss, inputs))
    for got, want in zip(results["triton"], results["torch"], strict=True):
        _close(got, want, rel)


def _leaf(*shape: int, scale: float = 1.0) -> torch.Tensor:
    return (torch.randn(*shape) * scale).to(DEV).requires_grad_()


@pytest.mark.parametrize(("batch", "T", "dim", "N", "use_last"), [(2, 9, 40, 4, True), (3, 5, 24, 5, False)])
def test_selective_scan_triton_matches_torch_path(batch, T, dim, N, use_last):
    """The model's call: D skip, z gate, dt bias + softplus; z, B and C are column slices of wider
    projections (row-strided views, read in place by the kernels)."""
    torch.manual_seed(0)
    xz, x_dbl = _leaf(batch, T, 2 * dim), _leaf(batch, T, 3 + 2 * N)
    x, dt = _leaf(batch, T, dim), _leaf(batch, T, dim)
    A = (-torch.rand(dim, N) - 0.5).to(DEV).requires_grad_()
    D, bias, h0 = _leaf(dim), _leaf(dim), _leaf(batch, dim, N)
    inputs = [xz, x_dbl, x, dt, A, D, bias, h0]

    def run(impl):
        z, B, C = xz[..., dim:], x_dbl[..., 3 : 3 + N], x_dbl[..., 3 + N :]
        return selective_scan_dense(x, dt, A, B, C, D, z, bias, h0, impl=impl)

    _compare(run, inputs, use_last)


def test_selective_scan_triton_without_skip_gate_bias_softplus():
    torch.manual_seed(3)
    batch, T, dim, N = 1, 7, 8, 16
    x, B, C, h0 = _leaf(batch, T, dim), _leaf(batch, T, N), _leaf(batch, T, N), _leaf(batch, dim, N)
    dt = torch.rand(batch, T, dim).to(DEV).requires_grad_()  # used as the step itself: positive
    A = (-torch.rand(dim, N) - 0.5).to(DEV).requires_grad_()
    inputs = [x, dt, A, B, C, h0]
    _compare(lambda impl: selective_scan_dense(x, dt, A, B, C, None, None, None, h0, dt_softplus=False, impl=impl),
             inputs, True)


def test_selective_scan_triton_bf16_inputs():
    """Under autocast the projections are bf16: the kernels read them in place (fp32 math) and return
    y and the input gradients in bf16, as the torch path does; within a bf16 rounding of each other."""
    torch.manual_seed(4)
    batch, T, dim, N = 2, 9, 40, 4
    bf = [_leaf(batch, T, dim).detach().bfloat16().requires_grad_() for _ in range(3)]
    B, C = (_leaf(batch, T, N).detach().bfloat16().requires_grad_() for _ in range(2))
    A = (-torch.rand(dim, N) - 0.5).to(DEV).requires_grad_()
    D, bias, h0 = _leaf(dim), _leaf(dim), _leaf(batch, dim, N)
    x, dt, z = bf
    inputs = [x, dt, z, A, B, C, D, bias, h0]
    _compare(lambda impl: selective_scan_dense(x, dt, A, B, C, D, z, bias, h0, impl=impl), inputs, True, 2e-2)


@pytest.mark.parametrize(("B", "T", "H", "N", "use_last"), [(2, 9, 3, 20, True), (1, 6, 2, 16, False)])
def test_wkv7_triton_matches_torch_path(B, T, H, N, use_last):
    torch.manual_seed(1)
    r, k, v = _leaf(B, T, H, N), _leaf(B, T, H, N), _leaf(B, T, H, N)
    w = (-torch.rand(B, T, H, N) * 2).to(DEV).requires_grad_()  # log decays, as RWKV-7 makes them (<= 0)
    kk = F.normalize(torch.randn(B, T, H, N), dim=-1).to(DEV)
    a = (-kk).requires_grad_()
    b = (kk * torch.rand(B, T, H, N).to(DEV)).requires_grad_()
    s0 = _leaf(B, H, N, N)
    inputs = [r, w, k, v, a, b, s0]
    _compare(lambda impl: wkv7_dense(r, w, k, v, a, b, s0, impl=impl), inputs, use_last)


def test_training_paths_take_triton_only_on_cuda():
    """Without CUDA (or with ARCHROUTER_NO_TRITON=1) impl=None is the torch path: same results, same graph."""
    from archrouter.kernels._dispatch import use_triton

    x = torch.zeros(1, device=DEV)
    assert use_triton(x) == (DEV == "cuda")
    with pytest.raises(ValueError, match="impl"):
        wkv7_dense(*(torch.zeros(1, 2, 1, 4),) * 6, torch.zeros(1, 1, 4, 4), impl="cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("family", ["mamba", "rwkv"])
def test_zoo_shape_triton_matches_torch_path_on_gpu(family):
    """The zoo's training shape (batch 64 x 256 tokens): compiled kernels vs the torch path, fp32.
    The recurrences run 256 steps, so compare with a looser 1e-3 of each tensor's largest entry."""
    torch.manual_seed(2)
    if family == "mamba":
        batch, T, dim, N = 64, 256, 512, 16
        x, dt, z = _leaf(batch, T, dim), _leaf(batch, T, dim), _leaf(batch, T, dim)
        A = (-torch.rand(dim, N) * 4 - 0.5).to(DEV).requires_grad_()
        B, C, D, bias = _leaf(batch, T, N), _leaf(batch, T, N), _leaf(dim), _leaf(dim, scale=0.0)
        h0 = _leaf(batch, dim, N)
        inputs = [x, dt, A, B, C, D, z, bias, h0]
        _compare(lambda impl: selective_scan_dense(x, dt, A, B, C, D, z, bias, h0, impl=impl), inputs, True, 1e-3)
    else:
        Bt, T, H, N = 64, 256, 4, 64
        r, k, v = _leaf(Bt, T, H, N), _leaf(Bt, T, H, N), _leaf(Bt, T, H, N)
        w = (-torch.rand(Bt, T, H, N) * 0.6).to(DEV).requires_grad_()
        kk = F.normalize(torch.randn(Bt, T, H, N), dim=-1).to(DEV)
        a = (-kk).requires_grad_()
        b = (kk * torch.rand(Bt, T, H, N).to(DEV)).requires_grad_()
        s0 = _leaf(Bt, H, N, N)
        _compare(lambda impl: wkv7_dense(r, w, k, v, a, b, s0, impl=impl), [r, w, k, v, a, b, s0], True, 1e-3)


@pytest.mark.parametrize("block", [8, 64])
def test_other_block_sizes_match(block, monkeypatch):
    """The block sizes bench_training_step.py --tiles sweeps give the same results (more / fewer partial sums)."""
    from archrouter.kernels.selective_scan import train_triton as scan
    from archrouter.kernels.wkv7 import train_triton as wkv

    monkeypatch.setattr(scan, "BLOCK_D", block)
    monkeypatch.setattr(wkv, "BLOCK_V", block)
    test_selective_scan_triton_matches_torch_path(2, 5, 24, 4, True)
    test_wkv7_triton_matches_torch_path(1, 5, 2, 16, True)


@pytest.mark.parametrize("family", ["mamba", "rwkv"])
def test_model_training_step_on_triton_kernels(family, monkeypatch):
    """A tiny model's training forward + backward with the dispatch forced to the Triton kernels (as on
    CUDA) gives the torch path's loss and parameter gradients: the model's real views and shapes."""
    import archrouter.kernels.selective_scan.train as scan_train
    import archrouter.kernels.wkv7.train as wkv7_train
    from archrouter.backends.families import family_module

    mod = family_module(family)
    ids = torch.randint(0, 256, (2, 11))

    def loss_and_grads():
        model = mod.from_config(mod.random_config("tiny"), seed=5).to(DEV)
        for p in model.parameters():
            p.requires_grad_(True)
        logits, _ = model(ids.to(DEV), None)
        loss = logits.float().logsumexp(-1).mean()
        loss.backward()
        return loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}

    ref_loss, ref_grads = loss_and_grads()
    for m in (scan_train, wkv7_train):
        monkeypatch.setattr(m, "use_triton", lambda *tensors: True)
    loss, grads = loss_and_grads()
    _close(loss, ref_loss)
    assert grads.keys() == ref_grads.keys()
    for name, g in grads.items():
        _close(g, ref_grads[name], 1e-3)
