"""Recurrent-state prefix caching: same outputs with and without it (in-process tier, byte tier),
saved prefill counted, Redis shared, a lagging or broken byte store never stalls or fails a request."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

import pytest
import redis
import torch

from archrouter.backends.base import Cache
from archrouter.backends.engine import MemoryStateStore, RedisStateStore, StateCache
from tests.backends.engine.conftest import FAMILY_PARAMS, RECURRENT_PARAMS, make_engine, request, run, settled
from tests.conftest import REDIS_URL

RECURRENT = RECURRENT_PARAMS

DOC = "The ledger moves: alice pays bob 3, bob pays carol 2, carol pays alice 1. " * 4
QUESTIONS = ["Who pays bob?", "How much does carol pay?", "And alice?"]


async def converse(engine, turns: int = 3, max_tokens: int = 6) -> list[list[int]]:
    """A chat where every turn's prompt extends the previous one (document, answers, new question)."""
    messages = [{"role": "system", "content": DOC}]
    outputs = []
    for q in QUESTIONS[:turns]:
        messages.append({"role": "user", "content": q})
        ids, text, _ = await run(engine, request(messages=list(messages), max_tokens=max_tokens))
        if engine.state_cache is not None:
            engine.state_cache.flush()  # the byte tier is written behind: the next turn finds this one's state
        outputs.append(ids)
        messages.append({"role": "assistant", "content": text})
    return outputs


def redis_store(**kw) -> RedisStateStore:
    try:
        redis.Redis.from_url(REDIS_URL).ping()
    except redis.RedisError as exc:  # the suite's real Redis is part of the environment
        pytest.fail(f"Redis at {REDIS_URL} is not reachable: {exc}")
    return RedisStateStore(REDIS_URL, prefix=f"archrouter:test-state:{uuid.uuid4().hex}", **kw)


@pytest.mark.parametrize("tier", ["device", "bytes"])
@pytest.mark.parametrize("family", FAMILY_PARAMS)
async def test_outputs_identical_with_and_without_state_cache(checkpoints, family, tier):
    plain = make_engine(checkpoints, family, state_cache="off")
    # "device": states kept as tensors in the process (the default), and for the Transformer its paged
    # KV blocks shared by prompts that start alike; "bytes": only safetensors snapshots in a byte store
    # (the Transformer's contiguous KV cache too), so every hit is a deserialisation
    byte_tier = {"state_store": MemoryStateStore(), "state_cache_local_bytes": 0, "kv_paged": False}
    cached = make_engine(checkpoints, family, state_cache="on", state_cache_block=16, state_cache_min_tokens=0,
                         **(byte_tier if tier == "bytes" else {}))
    try:
        want = await converse(plain)
        got = await converse(cached)
        assert got == want
        s = cached.stats()
        # turn 1 misses; turns 2 and 3 restore at least the system prompt's blocks
        assert s["prefix_misses"] == 1 and s["prefix_hits"] == 2
        assert s["prefix_saved_tokens"] >= 2 * (len(DOC) // 16) * 16
        # every prompt token was either prefilled or restored, never both
        assert s["prefill_tokens"] + s["prefix_saved_tokens"] == s["prompt_tokens"]
        assert plain.stats()["prefill_tokens"] == plain.stats()["prompt_tokens"]
        if family == "transformer" and tier == "device":  # blocks, not snapshots
            await settled(cached)
            assert s["kv_block_size"] == 16 and cached.stats()["kv_blocks_used"] == 0  # all back in the pool
            return
        assert s["prefix_stores"] >= 3 and s["prefix_cache_bytes"] > 0
        if tier == "bytes":
            assert s["prefix_bytes_written"] > 0 and s["prefix_bytes_read"] > 0
        else:
            assert s["prefix_bytes_written"] == s["prefix_bytes_read"] == 0  # nothing serialised
    finally:
        await plain.close()
        await cached.close()


@pytest.mark.parametrize("family", RECURRENT)
async def test_short_tails_are_not_snapshotted_but_the_prefix_still_serves(checkpoints, family):
    plain = make_engine(checkpoints, family, state_cache="off")
    every = make_engine(checkpoints, family, state_cache="on", state_cache_block=16, state_cache_min_tokens=0)
    long_only = make_engine(checkpoints, family, state_cache="on", state_cache_block=16, state_cache_min_tokens=64)
    try:
        want = await converse(plain)
        assert await converse(every) == want
        assert await converse(long_only) == want
        e, lo = every.stats(), long_only.stats()
        # turn 1 snapshots its prompt either way (a long tail); turns 2 and 3 add fewer than 64 tokens past
        # what they restore: `long_only` prefills them in the same forward instead of stopping at a block
        # boundary to snapshot, and still restores the document's prefix every turn
        assert lo["prefix_hits"] == e["prefix_hits"] == 2
        assert lo["prefix_saved_tokens"] >= 2 * (len(DOC) // 16) * 16
        assert lo["prefill_tokens"] + lo["prefix_saved_tokens"] == lo["prompt_tokens"]
        assert lo["steps"] < e["steps"] and lo["prefix_stores"] < e["prefix_stores"]
    finally:
        for engine in (plain, every, long_only):
            await engine.close()


@pytest.mark.parametrize("family", FAMILY_PARAMS)
async def test_redis_store_is_shared_between_two_engines(checkpoints, family):
    store = redis_store()
    reference = make_engine(checkpoints, family, state_cache="off")
    # two replicas of one backend (same name, same checkpoint) and separate store clients; the
    # Transformer shares KV snapshots of its contiguous cache (paged blocks stay in their pool)
    first = make_engine(checkpoints, family, name="shared", state_cache="on", state_store=store, kv_paged=False)
    second = make_engine(checkpoints, family, name="shared", state_cache="on", kv_paged=False,
                         state_store=RedisStateStore(REDIS_URL, prefix=store.prefix))
    try:
        want = await converse(reference, turns=2)
        messages = [{"role": "system", "content": DOC}, {"role": "user", "content": QUESTIONS[0]}]
        ids1, text1, _ = await run(first, request(messages=messages, max_tokens=6))
        first.state_cache.flush()  # written behind: wait until Redis holds it
        messages += [{"role": "assistant", "content": text1}, {"role": "user", "content": QUESTIONS[1]}]
        ids2, _, _ = await run(second, request(messages=messages, max_tokens=6))
        assert [ids1, ids2] == want
        s = second.stats()
        assert s["prefix_hits"] == 1 and s["prefix_saved_tokens"] >= (len(DOC) // 32) * 32
        assert first.stats()["prefix_stores"] >= 1
    finally:
        for e in (reference, first, second):
            await e.close()
        store.clear()


def test_redis_store_ttl_and_byte_cap():
    store = redis_store(ttl_s=60, max_bytes=250)
    try:
        for k in ("a", "b", "c"):
            store.put(k, bytes(100))
            time.sleep(0.01)  # distinct last-use times
        # 300 bytes over a 250-byte cap: the least recently used ("a") went
        assert store.present(["a", "b", "c"]) == [False, True, True]
        assert store.size_bytes() == 200 and store.evictions == 1
        assert store.get("b") == bytes(100)  # use refreshes "b": "c" is now the oldest
        time.sleep(0.01)
        store.put("d", bytes(100))
        assert store.present(["b", "c", "d"]) == [True, False, True]
        assert 0 < store.redis.ttl(store.key("d")) <= 60
    finally:
        store.clear()


def test_memory_store_is_lru_bounded_in_bytes():
    store = MemoryStateStore(max_bytes=250)
    for k in ("a", "b", "c"):
        store.put(k, bytes(100))
    assert store.present(["a", "b", "c"]) == [False, True, True]
    store.get("b")
    store.put("d", bytes(100))
    assert store.present(["b", "c", "d"]) == [True, False, True] and store.size_bytes() == 200


def test_keys_chain_over_the_prefix_and_namespace():
    a, b = StateCache(None, "backend-a|ckpt", block=4), StateCache(None, "b", block=4)
    tokens = list(range(20))
    long, short = a.keys(tokens, 20), a.keys(tokens[:13], 13)
    assert [n for n, _ in long] == [4, 8, 12, 16, 20] and long[:3] == short
    assert a.keys([*tokens[:7], 99, *tokens[8:]], 20)[:1] == long[:1]  # a change in block 2 changes keys 2+
    assert a.keys([*tokens[:7], 99, *tokens[8:]], 20)[1] != long[1]
    assert {k for _, k in b.keys(tokens, 20)}.isdisjoint(k for _, k in long)
    # a lookup never returns the whole prompt: the last token's logits must come from a forward
    state = Cache({"x": torch.arange(3.0)[None]})
    a.store(tokens, 8, state)
    assert a.lookup(tokens[:8], max_len=7) is None
    n, got = a.lookup(tokens[:9], max_len=8)
    assert n == 8 and torch.equal(got.tensors["x"], state.tensors["x"])
    got.tensors["x"] += 1  # a hit is the caller's own copy: the kept state is untouched
    assert torch.equal(a.lookup(tokens[:9], max_len=8)[1].tensors["x"], torch.arange(3.0)[None])


def test_local_tier_is_lru_bounded_in_bytes():
    sc = StateCache(None, "ns", block=4, local_bytes=250)
    tokens = list(range(16))
    for n in (4, 8, 12):  # 96 bytes each
        sc.store(tokens, n, Cache({"x": torch.zeros(1, 24)}))
    assert sc.stats()["prefix_cache_bytes"] == 192 and sc.stats()["prefix_evictions"] == 1
    assert sc.lookup(tokens, max_len=16)[0] == 12
    assert sc.lookup(tokens[:7] + [99], max_len=8) is None  # the 4-token state was evicted


class GatedStore(MemoryStateStore):
    """A byte store whose writes wait for `open` (a Redis that lags)."""

    def __init__(self):
        super().__init__()
        self.open = threading.Event()

    def put(self, key: str, value: bytes) -> None:
        self.open.wait(10)
        super().put(key, value)


def test_a_lagging_byte_store_never_stalls_a_store():
    store = GatedStore()
    sc = StateCache(store, "ns", block=4, restore=Cache.restore, write_queue=2)
    tokens = list(range(64))
    t0 = time.perf_counter()
    for n in range(4, 44, 4):  # ten stores while the byte store accepts none
        sc.store(tokens, n, Cache({"x": torch.full((1, 4), float(n))}))
    assert time.perf_counter() - t0 < 1.0
    s = sc.stats()
    assert s["prefix_stores"] == 10 and s["prefix_writes_dropped"] >= 7  # one in the writer, two queued
    store.open.set()
    sc.close()
    assert sc.stats()["prefix_bytes_written"] >= 1 and len(store._items) == 10 - s["prefix_writes_dropped"]
    # every state still hits from the local tier
    assert sc.lookup(tokens, max_len=40)[0] == 40


def test_a_corrupt_snapshot_is_a_miss_not_a_failure():
    store = MemoryStateStore()
    reader = StateCache(store, "ns", block=4, restore=Cache.restore, local_bytes=0)
    tokens = list(range(12))
    store.put(reader.keys(tokens, 8)[-1][1], b"not a safetensors snapshot")
    assert reader.lookup(tokens, max_len=11) is None
    assert reader.stats()["prefix_errors"] == 1 and reader.stats()["prefix_misses"] == 1


async def test_transformer_prompts_that_start_alike_share_kv_blocks(checkpoints):
    """Paged attention's prefix caching: a second request over the same system prompt reuses the first
    one's full KV blocks (while it runs, and after it ends), with the same greedy output as alone."""
    plain = make_engine(checkpoints, "transformer", state_cache="off")
    shared = make_engine(checkpoints, "transformer", kv_block_size=8)
    try:
        asks = [[{"role": "system", "content": DOC}, {"role": "user", "content": q}] for q in QUESTIONS]
        want = [(await run(plain, request(messages=m, max_tokens=6)))[0] for m in asks]
        first = asyncio.create_task(run(shared, request(messages=asks[0], max_tokens=40, rid="long")))
        while shared.stats()["decoding"] == 0:  # the first prompt is in: its full blocks are published
            await asyncio.sleep(0.005)
        s = shared.stats()
        used_by_first = s["kv_blocks_used"]
        second = await run(shared, request(messages=asks[1], max_tokens=6))
        third = await run(shared, request(messages=asks[2], max_tokens=6))
        await first
        assert [second[0], third[0]] == want[1:]
        s = shared.stats()
        prompt = len(shared.encode(request(messages=asks[1])))
        assert s["prefix_misses"] == 1 and s["prefix_hits"] == 2
        assert s["prefix_saved_tokens"] >= 2 * (len(DOC) // 8) * 8 and s["prefix_saved_tokens"] < 2 * prompt
        assert s["prefill_tokens"] + s["prefix_saved_tokens"] == s["prompt_tokens"]
        assert used_by_first >= len(DOC) // 8  # the document's blocks, held once while both ran
        await settled(shared)
        assert shared.stats()["kv_blocks_used"] == 0
        assert shared.model.kv_pool is None  # the engine's pool is its own; the model is left as it was
    finally:
        await plain.close()
        await shared.close()


@pytest.mark.parametrize("room", ["batch", "one row"])
async def test_decode_snapshots_only_while_the_batch_fits_the_local_tier(checkpoints, room):
    """Two rows decoding past a block boundary: each keeps a copy of its state there (stored when its
    turn ends) while the batch's states fit the local tier; otherwise only the prompts' snapshots."""
    probe = make_engine(checkpoints, "mamba", state_cache="off")
    state = probe.model.init_cache(1).nbytes()
    await probe.close()
    local = 4 * state if room == "batch" else int(1.5 * state)
    engine = make_engine(checkpoints, "mamba", state_cache="on", state_cache_block=16, state_cache_local_bytes=local,
                         state_cache_min_tokens=0)  # fmt: skip
    try:
        prompts = ["the cups move left and right, " * 2, "a ledger of small payments, " * 2]  # 50+ tokens
        reqs = [request(p, max_tokens=24, rid=str(i)) for i, p in enumerate(prompts)]
        outs = await asyncio.gather(*(run(engine, r) for r in reqs))
        assert all(len(ids) == 24 for ids, _, _ in outs)  # both decoded across a 16-token boundary
        assert engine.stats()["prefix_stores"] == (4 if room == "batch" else 2)
    finally:
        await engine.close()
