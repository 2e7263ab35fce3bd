"""The Llama family over the paged KV cache, against transformers and against the contiguous cache.

Tolerances: 1e-4 to transformers' fp32 logits (same math, other order), as in test_transformer.py;
5e-5 between our two caches: the paged one gathers its blocks into packed or padded buffers before
SDPA, the contiguous one runs SDPA over its buffer with a mask, so fp32 rounding differs, and on
logits of magnitude ~10 a few ulps (1.2e-6 each) add up.
"""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # the Triton path test below runs interpreted

pytest.importorskip("transformers")
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

from archrouter.backends import transformer as tr  # noqa: E402
from archrouter.backends.paged_cache import OutOfBlocks, PagedKVCache  # noqa: E402
from tests.backends.test_transformer import HF_TOL, VOCAB, _randomise, make_hf, max_diff  # noqa: E402

SELF_TOL = 5e-5


def test_paged_prefill_and_decode_match_transformers(tmp_path) -> None:
    hf, ours = make_hf("gqa4-llama3-headdim", tmp_path)
    pool = ours.use_paged_cache(num_blocks=64, block_size=4)
    ids = torch.randint(0, VOCAB, (2, 23))
    with torch.no_grad():
        ref = hf(ids).logits
        first, cache = ours(ids[:, :9])  # prefill crossing block boundaries, then decode
        assert isinstance(cache, PagedKVCache)
        steps = [first] + [ours(ids[:, t : t + 1], cache)[0] for t in range(9, 19)]
        steps.append(ours(ids[:, 19:], cache)[0])  # a multi-token second turn over the cached prefix
    assert max_diff(torch.cat(steps, 1), ref) < HF_TOL
    assert cache.lengths.tolist() == [23, 23] and pool.allocator.num_used == 2 * 6
    del cache
    assert pool.allocator.num_used == 0  # a dropped cache gives its blocks back


def test_paged_batch_at_different_lengths_equals_contiguous(tmp_path) -> None:
    _, ours = make_hf("gqa2-linear-bias", tmp_path)
    seqs = [torch.randint(0, VOCAB, (n,)) for n in (3, 11, 6)]
    feed = torch.randint(0, VOCAB, (5, 3))
    with torch.no_grad():
        contiguous = tr.KVCache.concat([ours(s[None])[1] for s in seqs])
        ours.use_paged_cache(num_blocks=40, block_size=4)
        paged = PagedKVCache.concat([ours(s[None])[1] for s in seqs])
        for t in range(5):
            a, contiguous = ours(feed[t].view(-1, 1), contiguous)
            b, paged = ours(feed[t].view(-1, 1), paged)
            assert max_diff(a, b) < SELF_TOL
        # a fork of row 1 (copy-on-write of its partial block) continues like the original
        fork = paged.gather([1, 1])
        c, _ = ours(feed[:2, 1].view(2, 1), fork)
        d, _ = ours(feed[:2, 1].view(2, 1), contiguous.gather([1, 1]))
        assert max_diff(c, d) < SELF_TOL


def test_prefix_reuse_skips_the_shared_prompt(tmp_path) -> None:
    _, ours = make_hf("mha-tied", tmp_path)
    pool = ours.use_paged_cache(num_blocks=32, block_size=4)
    system = torch.randint(0, VOCAB, (13,)).tolist()
    with torch.no_grad():
        _, first = ours(torch.tensor([system + [1, 2]]))
        used = pool.allocator.num_used
        follow = system + [3, 4, 5]
        cache = ours.init_cache(1)
        cached = cache.reuse_prefix(0, follow)
        assert cached == 12  # three full blocks of the shared system prompt
        logits, cache = ours(torch.tensor([follow[cached:]]), cache)
        full, _ = ours(torch.tensor([follow]), _contiguous(ours))
    assert max_diff(logits[0], full[0, cached:]) < SELF_TOL
    assert pool.allocator.num_used == used + 1  # the 4 uncached tokens took one new block
    del first


def _contiguous(model: tr.Transformer) -> tr.KVCache:
    """An empty contiguous cache for a model switched to paged caches."""
    pool, model.kv_pool = model.kv_pool, None
    try:
        return model.init_cache(1)
    finally:
        model.kv_pool = pool


def test_out_of_blocks_reaches_the_caller_and_the_cache_survives(tmp_path) -> None:
    _, ours = make_hf("mha-tied", tmp_path)
    pool = ours.use_paged_cache(num_blocks=3, block_size=4)
    ids = torch.randint(0, VOCAB, (1, 10))
    with torch.no_grad():
        _, cache = ours(ids[:, :9])  # 3 blocks, the last with one token
        with pytest.raises(OutOfBlocks):
            ours(ids[:, 9:].repeat(1, 4), cache)  # 4 more tokens need a 4th block
        assert cache.lengths.tolist() == [9]
        logits, cache = ours(ids[:, 9:], cache)  # one more fits
        full, _ = ours(ids, _contiguous(ours))
    assert max_diff(logits[0, -1], full[0, -1]) < SELF_TOL
    assert pool.allocator.num_free == 0


def test_snapshots_move_between_paged_and_contiguous_caches(tmp_path) -> None:
    _, ours = make_hf("gqa2-linear-bias", tmp_path)
    ours.use_paged_cache(num_blocks=32, block_size=4)
    ids = torch.randint(0, VOCAB, (1, 12))
    with torch.no_grad():
        _, paged = ours(ids[:, :11])
        data = paged.snapshot(0)
        as_contiguous = tr.KVCache.restore(data)
        a, _ = ours(ids[:, 11:], as_contiguous)
        b, _ = ours(ids[:, 11:], PagedKVCache.restore(data, pool=ours.kv_pool))
        c, _ = ours(ids[:, 11:], PagedKVCache.restore(tr.KVCache.restore(data).snapshot(0), pool=ours.kv_pool))
    assert max_diff(a, b) < SELF_TOL and max_diff(a, c) < SELF_TOL


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU the real Triton path is tested below")
@pytest.mark.parametrize("paged", [False, True])
def test_triton_path_under_interpreter_matches_transformers(paged: bool, tmp_path, monkeypatch) -> None:
    """The model's CUDA code path (fused RoPE, flash prefill over the cache, flash-decoding from the
    contiguous buffer or the pool) on CPU: the dispatch is told to take Triton, which interprets."""
    import archrouter.kernels.attention as ka
    monkeypatch.setattr(ka, "use_triton", lambda *ts: True)
    monkeypatch.setattr(tr, "use_triton", lambda *ts: True)
    gen = torch.Generator().manual_seed(torch.randint(0, 2**31, ()).item())
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=80, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=1, max_position_embeddings=128,
                      rms_norm_eps=1e-5, bos_token_id=None, eos_token_id=None, pad_token_id=None)  # fmt: skip
    hf = LlamaForCausalLM(cfg).eval()
    _randomise(hf, gen)
    hf.save_pretrained(tmp_path / "m")
    ours = tr.load(tmp_path / "m")  # head dim 16, GQA 4
    if paged:
        ours.use_paged_cache(num_blocks=16, block_size=16)
    ids = torch.randint(0, VOCAB, (2, 27))
    with torch.no_grad():
        ref = hf(ids).logits
        first, cache = ours(ids[:, :17])
        steps = [first] + [ours(ids[:, t : t + 1], cache)[0] for t in range(17, 23)]
        steps.append(ours(ids[:, 23:], cache)[0])
    assert max_diff(torch.cat(steps, 1), ref) < HF_TOL
    assert isinstance(cache, PagedKVCache) == paged


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("paged", [False, True])
def test_cuda_kernels_match_transformers(dtype: torch.dtype, paged: bool, tmp_path) -> None:
    """Head dim 64, GQA 4: the Triton path (fused RoPE, flash prefill, flash-decoding)."""
    gen = torch.Generator().manual_seed(torch.randint(0, 2**31, ()).item())
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=256, intermediate_size=320, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=1, max_position_embeddings=256,
                      rms_norm_eps=1e-5, bos_token_id=None, eos_token_id=None, pad_token_id=None)  # fmt: skip
    hf = LlamaForCausalLM(cfg).eval()
    _randomise(hf, gen)
    hf.save_pretrained(tmp_path / "m")
    hf = hf.to("cuda", dtype)
    ours = tr.load(tmp_path / "m", device="cuda", dtype=dtype)
    if paged:
        ours.use_paged_cache(num_blocks=64, block_size=16)
    ids = torch.randint(0, VOCAB, (3, 70), device="cuda")
    tol = 1e-3 if dtype == torch.float32 else 0.25  # as test_cuda_matches_transformers
    with torch.no_grad():
        ref = hf(ids).logits.float()
        full, _ = ours(ids)
        assert max_diff(full, ref) < tol
        first, cache = ours(ids[:, :40])
        steps = [first] + [ours(ids[:, t : t + 1], cache)[0] for t in range(40, 60)]
        steps.append(ours(ids[:, 60:], cache)[0])
        assert max_diff(torch.cat(steps, 1), ref) < tol


def test_host_ids_from_will_feed_stand_in_for_a_device_read(tmp_path) -> None:
    """The engine's runner hands the cache the ids it feeds (`will_feed`), so prefix hashes need no
    device read; ids of another shape are ignored, and they serve one forward only."""
    _, ours = make_hf("gqa2-linear-bias", tmp_path)
    pool = ours.new_kv_pool(num_blocks=16, block_size=4)
    ids = torch.randint(0, VOCAB, (1, 10))
    with torch.no_grad():
        a = pool.new_cache(1)
        a.will_feed(ids[:, :9].tolist())
        ours(ids[:, :9], a)
        a.will_feed([[1, 2]])  # wrong shape for the next forward: read back instead
        ours(ids[:, 9:], a)
        b = pool.new_cache(1)
        ours(ids, b)
    assert a.seqs[0].tokens == b.seqs[0].tokens == ids[0].tolist()
    assert a.seqs[0].hashes == b.seqs[0].hashes and len(a.seqs[0].hashes) == 2
    assert a._host_ids is None
