"""Paged KV cache: allocator bookkeeping, prefix sharing, copy-on-write, out-of-blocks, and attention
through the cache against SDPA over the plain token history (fp32, 1e-5: same math, other order)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load as st_load

from archrouter.backends.paged_cache import BlockAllocator, OutOfBlocks, PagedKVCache, PagedKVPool, block_hash

HQ, HKV, D, LAYERS, BS = 4, 2, 16, 2, 4


def _pool(num_blocks: int = 32) -> PagedKVPool:
    return PagedKVPool(LAYERS, num_blocks, BS, HKV, D)


class Model:
    """Per-token K/V/Q drawn from fixed random tables, so a token's K/V is the same in every sequence
    (what makes shared prefix blocks valid), with a per-position offset so order matters."""

    def __init__(self, vocab: int = 50) -> None:
        self.k = torch.randn(LAYERS, vocab, HKV, D)
        self.v = torch.randn(LAYERS, vocab, HKV, D)
        self.q = torch.randn(LAYERS, vocab, HQ, D)
        self.pos = torch.randn(256, 1, D) * 0.1

    def kv(self, layer: int, tokens: torch.Tensor, start: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """tokens [B, T] at positions start[b] + t -> q [B, Hq, T, D], k/v [B, Hkv, T, D]."""
        pos = start[:, None] + torch.arange(tokens.shape[1])
        p = self.pos[pos]  # [B, T, 1, D]
        f = lambda t: t.transpose(1, 2).contiguous()  # noqa: E731
        return f(self.q[layer][tokens] + p), f(self.k[layer][tokens] + p), f(self.v[layer][tokens] + p)


def _step(model: Model, cache: PagedKVCache, tokens: torch.Tensor) -> list[torch.Tensor]:
    start = cache.lengths
    cache.prepare(tokens)
    outs = []
    for layer in range(LAYERS):
        q, k, v = model.kv(layer, tokens, start)
        outs.append(cache.attend(layer, q, k, v))
    cache.commit()
    return outs


def _expected(model: Model, history: list[int], new: int) -> list[torch.Tensor]:
    """SDPA over the whole history of one sequence; output for its last `new` tokens, [Hq, new, D]."""
    toks = torch.tensor([history])
    outs = []
    for layer in range(LAYERS):
        q, k, v = model.kv(layer, toks, torch.tensor([0]))
        k, v = k.repeat_interleave(HQ // HKV, 1), v.repeat_interleave(HQ // HKV, 1)
        full = F.scaled_dot_product_attention(q, k, v, is_causal=True)[0]
        outs.append(full[:, -new:])
    return outs


def _check(model: Model, cache: PagedKVCache, histories: list[list[int]], tokens: torch.Tensor) -> None:
    outs = _step(model, cache, tokens)
    for b, hist in enumerate(histories):
        hist.extend(tokens[b].tolist())
        for layer, want in enumerate(_expected(model, hist, tokens.shape[1])):
            torch.testing.assert_close(outs[layer][b], want, atol=1e-5, rtol=1e-5)


def test_allocator_free_list_refcounts_and_out_of_blocks() -> None:
    alloc = BlockAllocator(4, BS)
    a = alloc.allocate(3)
    assert sorted(a) == [0, 1, 2] and alloc.num_free == 1
    with pytest.raises(OutOfBlocks) as err:
        alloc.allocate(2)
    assert (err.value.needed, err.value.available) == (2, 1) and alloc.num_free == 1  # nothing taken
    alloc.incref(a[0])
    alloc.free(a[0])
    assert alloc.refcount[a[0]] == 1 and alloc.num_free == 1  # still owned once
    alloc.free(a[0])
    assert alloc.num_free == 2
    with pytest.raises(ValueError):
        alloc.free(a[0])
    with pytest.raises(ValueError):
        alloc.incref(a[0])


def test_allocator_keeps_freed_full_blocks_findable_until_needed() -> None:
    alloc = BlockAllocator(3, BS)
    h1, h2 = block_hash(None, [1, 2, 3, 4]), block_hash(None, [5, 6, 7, 8])
    b1, b2 = alloc.allocate(2)
    assert alloc.register(b1, h1) == b1 and alloc.register(b2, h2) == b2
    alloc.free(b1)
    alloc.free(b2)
    assert alloc.num_free == 3  # cached blocks count as available
    assert alloc.lookup(h2) == b2 and alloc.refcount[b2] == 1  # revived
    taken = alloc.allocate(2)  # the free block, then the oldest cached one (b1) is evicted
    assert b1 in taken and alloc.lookup(h1) is None
    assert block_hash(h1, [9]) != block_hash(h2, [9])  # a block's identity includes its prefix


def test_paged_attention_matches_sdpa_over_turns() -> None:
    """Prefill, decode across block boundaries, then a second turn over the cached prefix."""
    model, pool = Model(), _pool()
    cache = pool.new_cache(3)
    hist: list[list[int]] = [[], [], []]
    _check(model, cache, hist, torch.randint(0, 50, (3, 6)))
    for _ in range(4):
        _check(model, cache, hist, torch.randint(0, 50, (3, 1)))
    _check(model, cache, hist, torch.randint(0, 50, (3, 5)))  # second turn: k_len > q_len
    assert cache.lengths.tolist() == [15, 15, 15]
    assert pool.allocator.num_used == 3 * 4  # ceil(15 / 4) blocks each
    cache.release()
    assert pool.allocator.num_used == 0


def test_gather_shares_blocks_and_copies_on_write() -> None:
    model, pool = Model(), _pool()
    base = pool.new_cache(1)
    hist = [[]]
    _check(model, base, hist, torch.randint(0, 50, (1, 6)))  # blocks: one full, one with 2 of 4
    before = base.snapshot(0)
    forked = base.gather([0, 0])  # two continuations of one prompt
    assert forked.seqs[0].blocks == base.seqs[0].blocks == forked.seqs[1].blocks
    assert all(pool.allocator.refcount[b] == 3 for b in base.seqs[0].blocks)
    used = pool.allocator.num_used
    _check(model, forked, [list(hist[0]), list(hist[0])], torch.tensor([[7], [8]]))
    # each row wrote into its own copy of the shared partial block; the full block stays shared
    assert pool.allocator.num_used == used + 2
    assert forked.seqs[0].blocks[0] == forked.seqs[1].blocks[0] == base.seqs[0].blocks[0]
    assert len({forked.seqs[0].blocks[1], forked.seqs[1].blocks[1], base.seqs[0].blocks[1]}) == 3
    after = st_load(base.snapshot(0))  # the original sequence is untouched
    assert all(torch.equal(after[name], t) for name, t in st_load(before).items())
    del forked  # dropping a cache gives its references back
    assert pool.allocator.num_used == used


def test_prefix_reuse_shares_full_blocks_across_requests() -> None:
    model, pool = Model(), _pool()
    prompt = torch.randint(0, 50, (11,)).tolist()
    first = pool.new_cache(1)
    _check(model, first, [[]], torch.tensor([prompt]))
    first_blocks = list(first.seqs[0].blocks)
    second = pool.new_cache(1)
    follow_up = prompt + [3, 4]
    cached = second.reuse_prefix(0, follow_up)
    assert cached == 8 and second.seqs[0].blocks == first_blocks[:2]  # two full blocks of 4
    assert all(pool.allocator.refcount[b] == 2 for b in first_blocks[:2])
    hist = [follow_up[:cached]]
    _check(model, second, hist, torch.tensor([follow_up[cached:]]))  # only the uncached suffix runs
    first.release()
    second.release()
    third = pool.new_cache(1)  # nobody holds the prompt now, yet its blocks are still found
    assert third.reuse_prefix(0, prompt) == 8
    assert pool.new_cache(1).reuse_prefix(0, [999] * 9) == 0  # an unseen prompt matches nothing


def test_out_of_blocks_is_reported_and_changes_nothing() -> None:
    model, pool = Model(), _pool(num_blocks=5)
    cache = pool.new_cache(2)
    _step(model, cache, torch.randint(0, 50, (2, 7)))  # 2 blocks each, 1 free
    blocks = [list(s.blocks) for s in cache.seqs]
    with pytest.raises(OutOfBlocks) as err:
        cache.prepare(torch.randint(0, 50, (2, 4)))  # needs 2 more
    assert err.value.needed == 2 and err.value.available == 1
    assert [s.blocks for s in cache.seqs] == blocks and cache.lengths.tolist() == [7, 7]
    _step(model, cache, torch.randint(0, 50, (2, 1)))  # still usable: 8 tokens fit in 2 blocks
    cache.release()
    assert pool.allocator.num_free == 5


def test_snapshot_restore_into_new_and_same_pool() -> None:
    model, pool = Model(), _pool()
    cache = pool.new_cache(2)
    hist: list[list[int]] = [[], []]
    _check(model, cache, hist, torch.randint(0, 50, (2, 9)))
    data = cache.snapshot(1)
    tok = torch.tensor([[5]])
    for target in (None, pool):
        restored = PagedKVCache.restore(data, pool=target)
        assert restored.lengths.tolist() == [9]
        _check(model, restored, [list(hist[1])], tok)
    with pytest.raises(ValueError):
        PagedKVCache.restore(data.replace(b'"transformer"', b'"mamba______"'))
