"""Recurrent-state prefix caching: same outputs with and without it, saved prefill counted, Redis shared."""

from __future__ import annotations

import time
import uuid

import pytest
import redis

from backends.engine import MemoryStateStore, RedisStateStore, StateCache
from tests.backends.engine.conftest import FAMILY_PARAMS, make_engine, request, run
from tests.conftest import REDIS_URL

DOC = "The ledger moves: alice pays bob 3, bob pays carol 2, carol pays alice 1. " * 4
QUESTIONS = ["Who pays bob?", "How much does carol pay?", "And alice?"]


async def converse(engine, turns: int = 3, max_tokens: int = 6) -> list[list[int]]:
    """A chat where every turn's prompt extends the previous one (document, answers, new question)."""
    messages = [{"role": "system", "content": DOC}]
    outputs = []
    for q in QUESTIONS[:turns]:
        messages.append({"role": "user", "content": q})
        ids, text, _ = await run(engine, request(messages=list(messages), max_tokens=max_tokens))
        outputs.append(ids)
        messages.append({"role": "assistant", "content": text})
    return outputs


def redis_store(**kw) -> RedisStateStore:
    try:
        redis.Redis.from_url(REDIS_URL).ping()
    except redis.RedisError as exc:  # the suite's real Redis is part of the environment
        pytest.fail(f"Redis at {REDIS_URL} is not reachable: {exc}")
    return RedisStateStore(REDIS_URL, prefix=f"archrouter:test-state:{uuid.uuid4().hex}", **kw)


@pytest.mark.parametrize("family", FAMILY_PARAMS)
async def test_outputs_identical_with_and_without_state_cache(checkpoints, family):
    plain = make_engine(checkpoints, family, state_cache="off")
    cached = make_engine(checkpoints, family, state_cache="on", state_cache_block=16,
                         state_store=MemoryStateStore())
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
        assert s["prefix_bytes_written"] > 0 and s["prefix_bytes_read"] > 0
    finally:
        await plain.close()
        await cached.close()


@pytest.mark.parametrize("family", FAMILY_PARAMS)
async def test_redis_store_is_shared_between_two_engines(checkpoints, family):
    store = redis_store()
    reference = make_engine(checkpoints, family, state_cache="off")
    # two replicas of one backend (same name, same checkpoint) and separate store clients
    first = make_engine(checkpoints, family, name="shared", state_cache="on", state_store=store)
    second = make_engine(checkpoints, family, name="shared", state_cache="on",
                         state_store=RedisStateStore(REDIS_URL, prefix=store.prefix))
    try:
        want = await converse(reference, turns=2)
        messages = [{"role": "system", "content": DOC}, {"role": "user", "content": QUESTIONS[0]}]
        ids1, text1, _ = await run(first, request(messages=messages, max_tokens=6))
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
    a, b = StateCache(MemoryStateStore(), "backend-a|ckpt", block=4), StateCache(MemoryStateStore(), "b", block=4)
    tokens = list(range(20))
    long, short = a.keys(tokens, 20), a.keys(tokens[:13], 13)
    assert [n for n, _ in long] == [4, 8, 12, 16, 20] and long[:3] == short
    assert a.keys([*tokens[:7], 99, *tokens[8:]], 20)[:1] == long[:1]  # a change in block 2 changes keys 2+
    assert a.keys([*tokens[:7], 99, *tokens[8:]], 20)[1] != long[1]
    assert {k for _, k in b.keys(tokens, 20)}.isdisjoint(k for _, k in long)
    # a lookup never returns the whole prompt: the last token's logits must come from a forward
    a.store(tokens, 8, b"state-8")
    assert a.lookup(tokens[:8], max_len=7) is None
    assert a.lookup(tokens[:9], max_len=8) == (8, b"state-8")
