"""Attention kernels: Triton (under TRITON_INTERPRET=1 on CPU) vs the plain-PyTorch reference and SDPA.

Tolerances. fp32: the kernels and the reference do the same exact arithmetic in a different
order, so 1e-4 absolute. bf16: inputs are the same bf16 values for both; the reference works in
fp32 while the kernel rounds the probabilities to bf16 before the P.V product and rounds its
output to bf16 (relative step 2^-8), so 2e-2 absolute/relative on outputs of magnitude <= ~2.
"""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before any Triton kernel is defined
import torch.nn.functional as F

from archrouter.kernels import attention
from archrouter.kernels.attention import decode, naive, prefill, rope, sdpa

TOL = {torch.float32: dict(atol=1e-4, rtol=1e-4), torch.bfloat16: dict(atol=2e-2, rtol=2e-2)}
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _cu(lens: list[int]) -> torch.Tensor:
    return torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32)


def _sdpa_one(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
    """SDPA for one sequence: q [Tq, Hq, D], k/v [Tk, Hkv, D]; end-aligned causal mask spelled out."""
    group = q.shape[1] // k.shape[1]
    qh = q.float().transpose(0, 1)[None]
    kh = k.float().transpose(0, 1).repeat_interleave(group, 0)[None]
    vh = v.float().transpose(0, 1).repeat_interleave(group, 0)[None]
    mask = None
    if causal:
        tq, tk = q.shape[0], k.shape[0]
        mask = torch.ones(tq, tk, dtype=torch.bool).tril(diagonal=tk - tq)
    return F.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask)[0].transpose(0, 1)


def _close(got: torch.Tensor, want: torch.Tensor, dtype: torch.dtype) -> None:
    torch.testing.assert_close(got.float(), want.float(), **TOL[dtype])


# GQA ratio 1 / 4 / 8, head dims 64 and 128, both dtypes
CASES = [(1, 2, 64, torch.float32), (4, 2, 128, torch.bfloat16), (8, 1, 64, torch.bfloat16),
         (4, 1, 64, torch.float32), (8, 1, 128, torch.float32), (1, 2, 128, torch.bfloat16)]  # fmt: skip


@pytest.mark.parametrize("group,kv_heads,d,dtype", CASES)
def test_prefill_varlen_matches_reference_and_sdpa(
    group: int, kv_heads: int, d: int, dtype: torch.dtype
) -> None:
    g = torch.Generator().manual_seed(torch.seed() % 2**31)
    lens = torch.randint(1, 48, (3,), generator=g).tolist() + [1, 33]  # random, odd, one-token rows
    cu = _cu(lens)
    q = torch.randn(int(cu[-1]), group * kv_heads, d, generator=g).to(dtype)
    k = torch.randn(int(cu[-1]), kv_heads, d, generator=g).to(dtype)
    v = torch.randn(int(cu[-1]), kv_heads, d, generator=g).to(dtype)
    out = prefill.attention_varlen(q, k, v, cu, cu, max(lens))
    _close(out, naive.attention_varlen(q, k, v, cu, cu), dtype)
    for b in range(len(lens)):
        s = slice(int(cu[b]), int(cu[b + 1]))
        _close(out[s], _sdpa_one(q[s], k[s], v[s], causal=True), dtype)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("blocks", [{"BLOCK_M": 16, "BLOCK_N": 16}, {"BLOCK_M": 32, "BLOCK_N": 16},
                                    {"BLOCK_M": 16, "BLOCK_N": 32}])  # fmt: skip
def test_prefill_over_cached_prefix(causal: bool, blocks: dict[str, int]) -> None:
    """Second-turn tokens (q_len) attend to the first turn's KV too (k_len > q_len)."""
    q_lens, k_lens = [7, 1, 20, 16], [31, 9, 20, 50]
    cq, ck = _cu(q_lens), _cu(k_lens)
    q = torch.randn(int(cq[-1]), 4, 64)
    k = torch.randn(int(ck[-1]), 1, 64)
    v = torch.randn(int(ck[-1]), 1, 64)
    out = prefill.attention_varlen(q, k, v, cq, ck, max(q_lens), causal=causal, blocks=blocks)
    _close(out, naive.attention_varlen(q, k, v, cq, ck, causal=causal), torch.float32)
    for b in range(len(q_lens)):
        sq, sk = slice(int(cq[b]), int(cq[b + 1])), slice(int(ck[b]), int(ck[b + 1]))
        _close(out[sq], _sdpa_one(q[sq], k[sk], v[sk], causal), torch.float32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_prefill_padded_kv_buffer(dtype: torch.dtype) -> None:
    """The padded layout: rows at different cache lengths, new tokens at the end of each row's keys."""
    bsz, hq, hkv, tq, cap, d = 3, 8, 2, 5, 40, 64
    q = torch.randn(bsz, hq, tq, d).to(dtype)
    k = torch.randn(bsz, hkv, cap, d).to(dtype)
    v = torch.randn(bsz, hkv, cap, d).to(dtype)
    k_lens = torch.tensor([5, 23, 40], dtype=torch.int32)
    out = prefill.attention_padded(q, k, v, k_lens)
    _close(out, naive.attention_padded(q, k, v, k_lens), dtype)
    for b in range(bsz):
        n = int(k_lens[b])
        want = _sdpa_one(q[b].transpose(0, 1), k[b, :, :n].transpose(0, 1), v[b, :, :n].transpose(0, 1), True)
        _close(out[b].transpose(0, 1), want, dtype)
    q_lens = torch.tensor([5, 2, 0], dtype=torch.int32)  # right-padded queries; row 2 has none
    out = prefill.attention_padded(q, k, v, k_lens, q_lens)
    _close(out, naive.attention_padded(q, k, v, k_lens, q_lens), dtype)
    assert torch.count_nonzero(out[1, :, 2:]) == 0 and torch.count_nonzero(out[2]) == 0


def _paged(lens: list[int], kv_heads: int, d: int, page: int, dtype: torch.dtype, g: torch.Generator):
    """A shuffled block pool holding one random sequence per length, plus its contiguous copy."""
    n_pages = [(n + page - 1) // page for n in lens]
    width = max(max(n_pages), 1)
    pool = sum(n_pages) + 3
    k_cache = torch.randn(pool, page, kv_heads, d, generator=g).to(dtype)
    v_cache = torch.randn(pool, page, kv_heads, d, generator=g).to(dtype)
    perm = torch.randperm(pool, generator=g)
    tables = torch.zeros(len(lens), width, dtype=torch.int32)
    used = 0
    for b, n in enumerate(n_pages):
        tables[b, :n] = perm[used : used + n].int()
        used += n
    return k_cache, v_cache, tables


@pytest.mark.parametrize("page", [8, 16, 32])
@pytest.mark.parametrize("group,kv_heads,d,dtype", CASES[:4])
def test_paged_decode_matches_reference_and_sdpa(
    page: int, group: int, kv_heads: int, d: int, dtype: torch.dtype
) -> None:
    g = torch.Generator().manual_seed(torch.seed() % 2**31)
    lens = torch.randint(1, 300, (3,), generator=g).tolist() + [1, 0, 17]  # an empty row: zeros
    k_cache, v_cache, tables = _paged(lens, kv_heads, d, page, dtype, g)
    q = torch.randn(len(lens), group * kv_heads, d, generator=g).to(dtype)
    ctx = torch.tensor(lens, dtype=torch.int32)
    want = naive.paged_decode(q, k_cache, v_cache, tables, ctx)
    for splits in (1, 3, None):  # one split writes directly; several go through the merge kernel
        _close(decode.paged_decode(q, k_cache, v_cache, tables, ctx, num_splits=splits), want, dtype)
    for b, n in enumerate(lens):
        if n == 0:
            assert torch.count_nonzero(want[b]) == 0
            continue
        kb, vb = naive.gather_paged(k_cache, v_cache, tables[b], n)
        _close(want[b], _sdpa_one(q[b][None], kb, vb, causal=False)[0], dtype)


def test_paged_decode_many_splits_with_short_rows() -> None:
    """A long block table and short contexts: most splits are empty and must not disturb the merge."""
    g = torch.Generator().manual_seed(torch.seed() % 2**31)
    lens = [600, 3, 129]
    k_cache, v_cache, tables = _paged(lens, 2, 64, 16, torch.float32, g)
    q = torch.randn(3, 8, 64, generator=g)
    ctx = torch.tensor(lens, dtype=torch.int32)
    out = decode.paged_decode(q, k_cache, v_cache, tables, ctx, num_splits=5, block_n=32)
    _close(out, naive.paged_decode(q, k_cache, v_cache, tables, ctx), torch.float32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_decode_over_contiguous_cache_in_place(dtype: torch.dtype) -> None:
    """The contiguous [B, Hkv, Tcap, D] cache read as 16-token blocks of a strided view."""
    bsz, hq, hkv, cap, d = 3, 8, 2, 48, 32
    k = torch.randn(bsz, hkv, cap, d).to(dtype)
    v = torch.randn(bsz, hkv, cap, d).to(dtype)
    q = torch.randn(bsz, hq, d).to(dtype)
    lens = torch.tensor([48, 1, 30], dtype=torch.int32)
    out = decode.decode_contiguous(q, k, v, lens, 48)
    _close(out, naive.attention_padded(q[:, :, None], k, v, lens)[:, :, 0], dtype)
    _close(out, attention.attention_decode_contiguous(q, k, v, lens, 48), dtype)  # CPU path


def test_write_then_gather_paged_roundtrip() -> None:
    k_cache = torch.zeros(6, 4, 2, 8)
    v_cache = torch.zeros(6, 4, 2, 8)
    table = torch.tensor([5, 0, 3], dtype=torch.int32)
    k, v = torch.randn(10, 2, 8), torch.randn(10, 2, 8)
    slots = table.long()[torch.arange(10) // 4] * 4 + torch.arange(10) % 4
    naive.write_paged(k_cache, v_cache, k, v, slots)
    kb, vb = naive.gather_paged(k_cache, v_cache, table, 10)
    assert torch.equal(kb, k) and torch.equal(vb, v)
    assert torch.count_nonzero(k_cache[[1, 2, 4]]) == 0  # blocks outside the table untouched


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rope_matches_reference_and_transformers(dtype: torch.dtype) -> None:
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    d, hq, hkv = 64, 6, 2  # 6 query heads: the kernel pads heads to a power of two
    inv_freq = 1.0 / (500000.0 ** (torch.arange(0, d, 2).float() / d))
    table = naive.rope_cos_sin(inv_freq, 128)
    positions = torch.randint(0, 128, (2, 9))
    q = torch.randn(2, 9, hq, d).to(dtype)
    k = torch.randn(2, 9, hkv, d).to(dtype)
    qo, ko = rope.apply_rope(q, k, positions, table)
    qr, kr = naive.apply_rope(q, k, positions, table)
    _close(qo, qr, dtype)
    _close(ko, kr, dtype)
    freqs = positions[..., None].float() * inv_freq  # HF: cos/sin [B, T, D] with duplicated halves
    emb = torch.cat([freqs, freqs], -1)
    qh, kh = apply_rotary_pos_emb(q.float(), k.float(), emb.cos(), emb.sin(), unsqueeze_dim=2)
    _close(qo, qh, dtype)
    _close(ko, kh, dtype)
    q2, k2 = q.clone(), k.clone()
    rope.apply_rope(q2, k2, positions, table, inplace=True)
    assert torch.equal(q2, qo) and torch.equal(k2, ko)


def test_public_dispatch_on_cpu_matches_sdpa() -> None:
    """On CPU tensors the public functions take the SDPA-based path; it agrees with SDPA spelled out."""
    lens = [3, 11]
    cu = _cu(lens)
    q, k, v = torch.randn(14, 4, 32), torch.randn(14, 2, 32), torch.randn(14, 2, 32)
    out = attention.attention_varlen(q, k, v, cu, cu)
    for b in range(2):
        s = slice(int(cu[b]), int(cu[b + 1]))
        _close(out[s], _sdpa_one(q[s], k[s], v[s], True), torch.float32)


@pytest.mark.parametrize("group,kv_heads,d,dtype", CASES)
def test_cpu_sdpa_paths_match_reference(group: int, kv_heads: int, d: int, dtype: torch.dtype) -> None:
    """What the paged cache runs off CUDA (`sdpa`) against the reference: random lengths, a cached prefix
    (fewer queries than keys), an empty sequence, one-token rows, GQA, both dtypes."""
    g = torch.Generator().manual_seed(group * 100 + d)
    lens_k = torch.randint(1, 70, (3,), generator=g).tolist() + [1, 0, 33]
    lens_q = [max(0, n - int(torch.randint(0, n + 1, (1,), generator=g))) if n else 0 for n in lens_k]
    lens_q[3] = 1
    cq, ck = _cu(lens_q), _cu(lens_k)
    hq = group * kv_heads
    q = torch.randn(int(cq[-1]), hq, d, generator=g).to(dtype)
    k, v = (torch.randn(int(ck[-1]), kv_heads, d, generator=g).to(dtype) for _ in range(2))
    for causal in (True, False):
        _close(sdpa.attention_varlen(q, k, v, cq, ck, causal=causal),
               naive.attention_varlen(q, k, v, cq, ck, causal=causal), dtype)  # fmt: skip
    ctx_lens = [200, 1, 0, 37, 16]
    k_cache, v_cache, tables = _paged(ctx_lens, kv_heads, d, 16, dtype, g)
    qd = torch.randn(len(ctx_lens), hq, d, generator=g).to(dtype)
    ctx = torch.tensor(ctx_lens, dtype=torch.int32)
    got = sdpa.paged_decode(qd, k_cache, v_cache, tables, ctx)
    _close(got, naive.paged_decode(qd, k_cache, v_cache, tables, ctx), dtype)
    assert got[2].abs().max() == 0  # a sequence with no context attends to nothing


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("d", [64, 128])
def test_gpu_kernels_against_reference(d: int) -> None:
    dev, dtype = "cuda", torch.bfloat16
    lens = [1000, 37, 513]
    cu = _cu(lens).to(dev)
    q = torch.randn(int(cu[-1]), 32, d, device=dev, dtype=dtype)
    k = torch.randn(int(cu[-1]), 8, d, device=dev, dtype=dtype)
    v = torch.randn(int(cu[-1]), 8, d, device=dev, dtype=dtype)
    _close(attention.attention_varlen(q, k, v, cu, cu), naive.attention_varlen(q, k, v, cu, cu), dtype)
    g = torch.Generator().manual_seed(0)
    k_cache, v_cache, tables = _paged([3000, 5, 700], 8, d, 16, dtype, g)
    k_cache, v_cache, tables = k_cache.to(dev), v_cache.to(dev), tables.to(dev)
    qd = torch.randn(3, 32, d, device=dev, dtype=dtype)
    ctx = torch.tensor([3000, 5, 700], dtype=torch.int32, device=dev)
    _close(attention.paged_decode(qd, k_cache, v_cache, tables, ctx),
           naive.paged_decode(qd, k_cache, v_cache, tables, ctx), dtype)  # fmt: skip
