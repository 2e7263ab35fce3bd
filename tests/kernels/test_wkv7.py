"""WKV-7 Triton kernels against the plain-PyTorch recurrence: compiled on a CUDA device, run by the
interpreter on CPU (tests/conftest.py sets TRITON_INTERPRET=1 when there is no GPU)."""

import pytest
import torch
import torch.nn.functional as F

from archrouter.kernels.wkv7 import naive_wkv7, wkv7

chunk_wkv7 = pytest.importorskip("archrouter.kernels.wkv7.chunk").chunk_wkv7
fused_recurrent_wkv7 = pytest.importorskip("archrouter.kernels.wkv7.fused_recurrent").fused_recurrent_wkv7

# the kernels run where the inputs live: compiled Triton on a GPU, the interpreter on CPU
DEV = "cuda" if torch.cuda.is_available() else "cpu"

# fp32: the chunked form reorders sums and divides by cumulative decays: 1e-4 on O(1) outputs.
# bf16 inputs: both paths compute in fp32 from the same rounded inputs; the outputs can differ by
# one bf16 rounding of y (2^-8 relative, 2^-7 with the reference's own rounding): rtol 1e-2; on a GPU
# the chunked kernel's matmuls run in tf32 (2^-11) and its scratch is bf16 (2^-8): 2e-2.
TOL = {torch.float32: dict(atol=1e-4, rtol=1e-4), torch.bfloat16: dict(atol=2e-2, rtol=2e-2)}
# final states, as a fraction of their largest magnitude: fp32 1e-4; bf16 inputs take bf16 scratch
# between the chunked passes (each intermediate rounded to 2^-8, several summed per entry): 2e-2
STATE_TOL = {torch.float32: 1e-4, torch.bfloat16: 2e-2}


def assert_state_close(pool, ref_pool, dtype=torch.float32):
    assert (pool - ref_pool).abs().max() <= STATE_TOL[dtype] * max(1.0, float(ref_pool.abs().max()))


def assert_close(y, y_ref, dtype=torch.float32):
    if dtype == torch.float32:
        torch.testing.assert_close(y.float(), y_ref.float(), **TOL[dtype])
    else:  # bf16 roundings scale with the outputs' magnitude: compare against the largest
        err = (y.float() - y_ref.float()).abs().max()
        assert err <= TOL[dtype]["rtol"] * max(1.0, float(y_ref.float().abs().max())), err


def make_inputs(B, T, H, N, dtype=torch.float32, gen=None):
    """RWKV-7-shaped inputs: log decay in [-exp(-0.5), 0), a = -kk, b = kk * gate, |kk| = 1."""

    def rnd(*s):
        return torch.randn(*s, generator=gen)

    r, k, v = rnd(B, T, H, N), rnd(B, T, H, N) * 0.5, rnd(B, T, H, N)
    w = -0.6065 * torch.sigmoid(rnd(B, T, H, N) * 2)
    kk = F.normalize(rnd(B, T, H, N), dim=-1)
    gate = torch.sigmoid(rnd(B, T, H, N))
    return [x.to(DEV, dtype) for x in (r, w, k, v, -kk, kk * gate)]


def randn(*shape, gen, scale=1.0):
    return (torch.randn(*shape, generator=gen) * scale).to(DEV)


@pytest.fixture
def gen():
    g = torch.Generator()
    g.seed()  # fresh inputs every run
    return g


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("chunk", [16, 32, 64])
def test_chunk_matches_reference_with_state_in_and_out(dtype, chunk, gen):
    B, T, H, N = 2, 45 if chunk < 64 else 141, 2, 32  # odd length: last chunk partial
    x = make_inputs(B, T, H, N, dtype, gen)
    s0 = randn(B, H, N, N, gen=gen, scale=0.3)
    ref_pool, pool = s0.clone(), s0.clone()
    y_ref = naive_wkv7(*x, ref_pool)
    y = chunk_wkv7(*x, pool, chunk_size=chunk)
    assert_close(y, y_ref, dtype)
    assert_state_close(pool, ref_pool, dtype)  # state stays fp32 for both
    assert y.dtype == dtype


@pytest.mark.parametrize("scratch", [torch.bfloat16, torch.float32])
def test_chunk_scratch_dtypes(scratch, gen):
    """bf16 inputs; intermediates stored in bf16 (the default for 16-bit inputs) or fp32 between
    the three passes (Y0 stays fp32). bf16: each rounded to 2^-8 relative, with
    sums of several such terms per output; the state and arithmetic stay fp32 -> max error within
    2e-2 of the outputs' (and states') largest magnitude."""
    B, T, H, N = 2, 45, 2, 32
    x = make_inputs(B, T, H, N, torch.bfloat16, gen)
    s0 = randn(B, H, N, N, gen=gen, scale=0.3)
    ref_pool, pool = s0.clone(), s0.clone()
    y_ref = naive_wkv7(*x, ref_pool)
    y = chunk_wkv7(*x, pool, chunk_size=16, scratch_dtype=scratch)
    assert (y.float() - y_ref.float()).abs().max() < 2e-2 * y_ref.float().abs().max()
    assert (pool - ref_pool).abs().max() < 2e-2 * ref_pool.abs().max()


@pytest.mark.parametrize("chunk", [16, 64])
def test_chunk_long_sequence_many_chunks(chunk, gen):
    """One sequence of many chunks through the sequential state pass, value rows split over programs
    (block_v < V), state in and out: the per-chunk start states it stores feed every chunk's output."""
    B, T, H, N = 1, 389, 1, 32
    x = make_inputs(B, T, H, N, gen=gen)
    s0 = randn(B, H, N, N, gen=gen, scale=0.3)
    ref_pool, pool = s0.clone(), s0.clone()
    y_ref = naive_wkv7(*x, ref_pool)
    y = chunk_wkv7(*x, pool, chunk_size=chunk, block_v=16)
    assert_close(y, y_ref)
    assert_state_close(pool, ref_pool)


def test_chunk_bf16_matmuls(gen):
    """bf16 matmul operands (the interpreter rounds them through bf16, as the GPU's operands are):
    within the bf16 tolerance of the reference."""
    B, T, H, N = 2, 77, 2, 32
    x = make_inputs(B, T, H, N, torch.bfloat16, gen)
    s0 = randn(B, H, N, N, gen=gen, scale=0.3)
    ref_pool, pool = s0.clone(), s0.clone()
    y_ref = naive_wkv7(*x, ref_pool)
    y = chunk_wkv7(*x, pool, chunk_size=64, bf16_matmuls=True)
    assert_close(y, y_ref, torch.bfloat16)
    assert_state_close(pool, ref_pool, torch.bfloat16)


def test_chunk_size_64_and_one_token_sequence(gen):
    x = make_inputs(1, 70, 1, 64, gen=gen)
    pool_ref, pool = torch.zeros(1, 1, 64, 64, device=DEV), torch.zeros(1, 1, 64, 64, device=DEV)
    y_ref = naive_wkv7(*x, pool_ref)
    y = chunk_wkv7(*x, pool, chunk_size=64)
    assert (y - y_ref).abs().max() < 1e-4
    assert (pool - pool_ref).abs().max() < 1e-4


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_recurrent_matches_reference(dtype, gen):
    B, T, H, N = 3, 7, 2, 32
    x = make_inputs(B, T, H, N, dtype, gen)
    s0 = randn(B, H, N, N, gen=gen, scale=0.3)
    ref_pool, pool = s0.clone(), s0.clone()
    y_ref = naive_wkv7(*x, ref_pool)
    y = fused_recurrent_wkv7(*x, pool, block_v=16)
    assert_close(y, y_ref, dtype)
    assert (pool - ref_pool).abs().max() < 1e-4


@pytest.mark.parametrize("kernel", ["chunk", "chunk16", "chunk16-host-layout", "fused_recurrent"])
def test_varlen_slots_leave_other_states_untouched(kernel, gen):
    """Packed ragged batch, states scattered over a larger pool in shuffled order; rows of the
    pool that no sequence names must come back bit-identical (fla #1272: padding must not decay
    a state). The chunked kernel at C = 64 and C = 16: sequences of several chunks, partial last ones."""
    H, N = 2, 32
    lens = [5, 1, 0, 133, 18] if kernel != "fused_recurrent" else [5, 1, 0, 33, 18]  # an empty one too
    cu = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], device=DEV)
    x = make_inputs(1, sum(lens), H, N, gen=gen)
    pool0 = randn(7, H, N, N, gen=gen, scale=0.3)
    slots = torch.tensor([5, 0, 6, 3, 2], dtype=torch.int32, device=DEV)
    ref_pool, pool = pool0.clone(), pool0.clone()
    y_ref = naive_wkv7(*x, ref_pool, slots, cu)
    if kernel == "fused_recurrent":
        y = fused_recurrent_wkv7(*x, pool, slots, cu)
    else:  # "host-layout": the lengths given as the engine knows them (the chunk layout built on the host)
        y = chunk_wkv7(*x, pool, slots, cu, chunk_size=16 if kernel.startswith("chunk16") else 64,
                       lengths=lens if kernel.endswith("host-layout") else None)
    assert (y - y_ref).abs().max() < 1e-4
    assert (pool - ref_pool).abs().max() < 1e-4
    for untouched in (1, 4, 6):  # 6 belongs to the empty sequence
        assert torch.equal(pool[untouched], pool0[untouched])
    # each sequence alone, from its own state, gives the same output: no leakage across sequences
    for i, (lo, hi) in enumerate(zip(cu[:-1].tolist(), cu[1:].tolist(), strict=True)):
        alone = pool0[slots[i].long()].unsqueeze(0).clone()
        y_i = naive_wkv7(*(t[:, lo:hi] for t in x), alone)
        torch.testing.assert_close(y[:, lo:hi], y_i, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(pool[slots[i].long()], alone[0], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kernel", ["chunk", "fused_recurrent", "naive"])
def test_padding_slot_touches_no_state(kernel, gen):
    """A decode batch padded to a fixed size (as a CUDA graph needs): slot -1 rows read and write nothing."""
    H, N = 2, 16
    T = 1 if kernel != "chunk" else 20
    x = make_inputs(4, T, H, N, gen=gen)
    pool0 = randn(3, H, N, N, gen=gen)
    slots = torch.tensor([2, -1, 0, -1], dtype=torch.int32, device=DEV)
    pool = pool0.clone()
    fn = {"chunk": chunk_wkv7, "fused_recurrent": fused_recurrent_wkv7, "naive": naive_wkv7}[kernel]
    y = fn(*x, pool, slots)
    assert torch.equal(pool[1], pool0[1])
    ref = pool0[[2, 0]].clone()
    y_ref = naive_wkv7(*(t[[0, 2]] for t in x), ref)
    assert (y[[0, 2]] - y_ref).abs().max() < 1e-4
    assert (pool[[2, 0]] - ref).abs().max() < 1e-4


def test_decode_steps_continue_a_chunked_prefill(gen):
    """Prefill with the chunked kernel, then decode token by token with the fused one: same as
    the reference over the whole sequence."""
    B, T, H, N = 2, 21, 1, 32
    x = make_inputs(B, T, H, N, gen=gen)
    ref_pool, pool = torch.zeros(B, H, N, N, device=DEV), torch.zeros(B, H, N, N, device=DEV)
    y_ref = naive_wkv7(*x, ref_pool)
    ys = [chunk_wkv7(*(t[:, :16] for t in x), pool, chunk_size=16)]
    for t in range(16, T):
        ys.append(fused_recurrent_wkv7(*(u[:, t : t + 1] for u in x), pool))
    assert (torch.cat(ys, 1) - y_ref).abs().max() < 1e-4
    assert (pool - ref_pool).abs().max() < 1e-4


def test_dispatch_takes_reference_on_cpu(gen):
    x = [t.cpu() for t in make_inputs(1, 5, 1, 16, gen=gen)]
    p1, p2 = torch.zeros(1, 1, 16, 16), torch.zeros(1, 1, 16, 16)
    assert torch.equal(wkv7(*x, p1), naive_wkv7(*x, p2))
    assert torch.equal(p1, p2)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("T", [1, 7, 300])
def test_cuda_dispatch_matches_reference(T):
    """On the GPU the public entry point takes the compiled Triton kernels (chunked for prefill,
    fused recurrent for decode); bf16 inputs, fp32 state, real head size."""
    B, H, N = 3, 4, 64
    x = [t.cuda() for t in make_inputs(B, T, H, N, torch.bfloat16)]
    s0 = torch.randn(B + 2, H, N, N, device="cuda") * 0.1
    slots = torch.tensor([4, 0, 2], dtype=torch.int32, device="cuda")
    ref_pool, pool = s0.clone(), s0.clone()
    y_ref = naive_wkv7(*x, ref_pool, slots)
    y = wkv7(*x, pool, slots)
    assert_close(y, y_ref, torch.bfloat16)
    assert_state_close(pool, ref_pool, torch.bfloat16)  # tf32 matmuls, bf16 scratch in the chunked path
    assert torch.equal(pool[[1, 3]], s0[[1, 3]])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("chunk", [16, 32, 64])
@pytest.mark.parametrize("varlen", [False, True])
def test_cuda_chunk_sizes_match_reference(chunk, varlen):
    """Every compiled variant the benchmark times (chunk sizes, equal-length and packed batches; bf16
    inputs, real head size) against the reference, several chunks per sequence, state in and out."""
    H, N = 4, 64
    lens = [300, 77, 1, 190]
    x = make_inputs(1 if varlen else len(lens), sum(lens) if varlen else 300, H, N, torch.bfloat16)
    x = [t.cuda() for t in x]
    s0 = torch.randn(len(lens), H, N, N, device="cuda") * 0.1
    ref_pool, pool = s0.clone(), s0.clone()
    if varlen:
        cu = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], device="cuda")
        y_ref = naive_wkv7(*x, ref_pool, None, cu)
        y = chunk_wkv7(*x, pool, None, cu, chunk_size=chunk)
    else:
        y_ref = naive_wkv7(*x, ref_pool)
        y = chunk_wkv7(*x, pool, chunk_size=chunk)
    assert_close(y, y_ref, torch.bfloat16)
    assert_state_close(pool, ref_pool, torch.bfloat16)
