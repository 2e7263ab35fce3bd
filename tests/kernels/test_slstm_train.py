"""The Triton sLSTM training kernels (kernels/slstm/fused_train.py) against autograd through the torch path.

Outputs, final states and the gradients of every input (x, R, b and the initial h, c, n, m) for a
random upstream gradient on y and on each final state, fp32. Without CUDA the kernels run in the
Triton interpreter on CPU tensors (tests/conftest.py); on a GPU machine the same tests compile and
run them on CUDA tensors. `test_zoo_shape_on_gpu` is the zoo model's shape, with timings (-s).
"""

import json
import textwrap
import time

import pytest
import torch

from archrouter.backends.families import family_module
from archrouter.kernels.slstm.fused_train import slstm_scan_dense_triton
from archrouter.kernels.slstm.train import slstm_scan_dense, slstm_scan_dense_torch, slstm_train_backend
from tests.kernels.outside_interpreter import run_outside_interpreter

DEV = "cuda" if torch.cuda.is_available() else "cpu"
TOL = {"atol": 1e-4, "rtol": 1e-4}


def _inputs(B, T, NH, D, *, scale=1.0, fresh=False, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, s=1.0, shift=0.0):
        return (torch.randn(*shape, generator=g) * s + shift).to(DEV)

    x = rnd(B, T, 4, NH, D, s=scale).to(dtype)
    R = rnd(NH, 4, D, D, s=0.5 / D**0.5)
    b = rnd(4, NH, D)
    if fresh:  # the cache's fresh state: zeros and m = -inf
        h, c, n = (torch.zeros(B, NH, D, device=DEV) for _ in range(3))
        m = torch.full((B, NH, D), float("-inf"), device=DEV)
    else:
        h, c = rnd(B, NH, D), rnd(B, NH, D)
        n = torch.rand(B, NH, D, generator=g).to(DEV) + 0.5
        m = rnd(B, NH, D)
    return [t.requires_grad_() for t in (x, R, b, h, c, n, m)]


def _check(inputs, tol=TOL, seed=1):
    y, last = slstm_scan_dense_triton(*inputs)
    y_ref, last_ref = slstm_scan_dense_torch(*inputs)
    assert y.dtype == y_ref.dtype and y.shape == y_ref.shape
    outs, refs = [y, *last], [y_ref, *last_ref]
    for o, r in zip(outs, refs, strict=True):
        torch.testing.assert_close(o, r, **tol)
    g = torch.Generator().manual_seed(seed)
    ups = [torch.randn(o.shape, generator=g).to(DEV, o.dtype) for o in outs]
    # a fresh state's m stays -inf at rows the sequence never reached; weight only finite entries
    ups = [torch.where(torch.isfinite(r), u, 0) for u, r in zip(ups, refs, strict=True)]
    want = [i for i in inputs if i.requires_grad]
    ours = torch.autograd.grad(sum((o * u).sum() for o, u in zip(outs, ups, strict=True)), want, allow_unused=True)
    theirs = torch.autograd.grad(sum((r * u).sum() for r, u in zip(refs, ups, strict=True)), want, allow_unused=True)
    names = ["x", "R", "b", "h", "c", "n", "m"]
    for name, a, r in zip(names, ours, theirs, strict=True):
        assert a is not None and r is not None, name
        assert a.dtype == r.dtype, name
        torch.testing.assert_close(a, r, **tol, msg=lambda s, name=name: f"d{name}: {s}")


@pytest.mark.parametrize(("B", "T", "NH", "D"), [(3, 9, 2, 16), (2, 7, 2, 32), (2, 5, 1, 20)])
def test_matches_torch_path(B, T, NH, D):
    """D = 20 pads the head to 32 lanes; B < 16 pads the batch block."""
    _check(_inputs(B, T, NH, D))


def test_large_preactivations_exercise_the_stabiliser():
    """Gate pre-activations of +-20: m moves, the exp gates saturate at 1, sigmoid / tanh saturate."""
    inputs = _inputs(3, 11, 2, 16, scale=20.0, seed=2)
    _check(inputs)


def test_stabiliser_ties_split_the_gradient():
    """m_{t-1} + logsigmoid(f) == i exactly (f = 100: logsigmoid rounds to 0 next to m): torch.maximum's
    backward gives each side half, and the kernel must too."""
    x, R, b, h, c, n, m = (t.detach() for t in _inputs(2, 3, 2, 16, seed=8))
    R.zero_(), b.zero_()
    x[:, :, 1] = 100.0
    m.copy_(x[:, 0, 0])  # a tie at every lane of step 0
    _check([t.requires_grad_() for t in (x, R, b, h, c, n, m)])


def test_fresh_state():
    """h = c = n = 0, m = -inf at the start (what training starts from): finite outputs, no NaN grads."""
    _check(_inputs(2, 13, 2, 16, fresh=True, seed=3))


def test_streamed_recurrent_weights(monkeypatch):
    """The large-D layout (R reread in KC-row chunks each step) at a small D, two chunks per step."""
    monkeypatch.setenv("ARCHROUTER_SLSTM_TRAIN_HOIST", "0")
    monkeypatch.setenv("ARCHROUTER_SLSTM_TRAIN_KC", "16")
    _check(_inputs(3, 7, 2, 32, scale=5.0, seed=4))


def test_bf16_inputs():
    """Under autocast x arrives in bf16: y and dx come back in bf16, the rest of the math is fp32."""
    _check(_inputs(2, 7, 2, 16, dtype=torch.bfloat16, seed=5), tol={"atol": 1e-2, "rtol": 1e-2})


def test_dispatch(monkeypatch):
    x = torch.zeros(1, 1, 4, 1, 16)
    monkeypatch.delenv("ARCHROUTER_SLSTM_TRAIN", raising=False)
    monkeypatch.delenv("ARCHROUTER_NO_TRITON", raising=False)
    assert slstm_train_backend(x) == "torch"  # CPU tensors
    if torch.cuda.is_available():
        assert slstm_train_backend(x.cuda()) == "triton"
        monkeypatch.setenv("ARCHROUTER_NO_TRITON", "1")  # the references everywhere, as the other paths
        assert slstm_train_backend(x.cuda()) == "torch"
    monkeypatch.setenv("ARCHROUTER_SLSTM_TRAIN", "triton")
    assert slstm_train_backend(x) == "triton"
    monkeypatch.setenv("ARCHROUTER_SLSTM_TRAIN", "fast")
    with pytest.raises(ValueError, match="ARCHROUTER_SLSTM_TRAIN"):
        slstm_train_backend(x)


def test_model_loss_and_grads_match(monkeypatch):
    """The tiny xLSTM preset (one sLSTM block, 2 heads of 32): same loss and parameter grads."""
    mod = family_module("xlstm")
    model = mod.from_config(mod.random_config("tiny"), seed=5).to(DEV)
    for p in model.parameters():
        p.requires_grad_(True)
    ids = torch.randint(0, 256, (2, 9), generator=torch.Generator().manual_seed(6)).to(DEV)

    def loss_and_grads(backend):
        monkeypatch.setenv("ARCHROUTER_SLSTM_TRAIN", backend)
        model.zero_grad()
        logits, _ = model(ids, None)
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten())
        loss.backward()
        return loss.detach(), {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}

    loss_t, grads_t = loss_and_grads("triton")
    loss_r, grads_r = loss_and_grads("torch")
    torch.testing.assert_close(loss_t, loss_r, **TOL)
    assert grads_t.keys() == grads_r.keys() and any("recurrent_kernel" in k for k in grads_t)
    for k in grads_r:
        torch.testing.assert_close(grads_t[k], grads_r[k], atol=1e-4, rtol=1e-3, msg=lambda s, k=k: f"{k}: {s}")


_COMPILE = textwrap.dedent(
    """
    import json, sys
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from archrouter.kernels.slstm import fused_train as ft

    out = []
    for D in (16, 32, 64, 128):
        for fn, ptrs in ((ft._slstm_train_fwd, 8), (ft._slstm_train_bwd, 11)):
            opts = ft._launch_opts(D)
            warps = opts.pop("num_warps")
            names = fn.arg_names
            sig = {a: "*fp32" for a in names[:ptrs]}
            if fn is ft._slstm_train_fwd:
                sig["x_ptr"] = "*bf16"  # what autocast hands over
            sig.update(B="i32", T="i32")
            consts = {"NH": 4, "D": D, **opts}
            sig.update({k: "constexpr" for k in consts})
            src, h100 = ASTSource(fn, sig, consts), GPUTarget("cuda", 90, 32)
            k = triton.compile(src, target=h100, options={"num_warps": warps})
            out.append({"kernel": fn.__name__, "D": D, "shared": k.metadata.shared})
    print(json.dumps(out))
    """
)


def test_kernels_compile_for_h100():
    """Compile both kernels for sm_90 (no GPU needed) at D = 16..128: the interpreter checks the math but
    not what only the compiler sees (layouts, tl.dot shapes, shared memory within the H100's 227 KB)."""
    run = run_outside_interpreter(_COMPILE)
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert len(got) == 8
    for k in got:
        assert k["shared"] <= 227 * 1024, k


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_zoo_shape_on_gpu():
    """The zoo model's sLSTM (B 64, T 256, 4 heads of 64), fp32 and a fresh state; prints ms per fwd+bwd."""
    inputs = _inputs(64, 256, 4, 64, scale=2.0, fresh=True, seed=7)
    # 256 recurrent steps: fp32 summation-order differences grow along the sequence
    _check(inputs, tol={"atol": 1e-3, "rtol": 1e-3})

    def step(fn):
        y, last = fn(*inputs)
        (y.sum() + last[1].sum()).backward()

    for name, fn in (("triton", slstm_scan_dense_triton), ("torch", slstm_scan_dense_torch)):
        step(fn)  # compile / warm up
        torch.cuda.synchronize()
        reps = 10 if name == "triton" else 2
        t0 = time.perf_counter()
        for _ in range(reps):
            step(fn)
        torch.cuda.synchronize()
        print(f"sLSTM fwd+bwd at B64 T256 NH4 D64, {name}: {(time.perf_counter() - t0) / reps * 1e3:.2f} ms")
    assert slstm_scan_dense(*inputs)[0].shape == (64, 256, 4, 64)
