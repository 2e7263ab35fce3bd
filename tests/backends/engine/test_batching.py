"""Continuous batching against the one-request-at-a-time Generator, per family, on tiny random models."""

from __future__ import annotations

import asyncio

import pytest

from archrouter.backends.engine import QueueTimeout
from archrouter.backends.protocol import BackendError, BackendOverloaded, ContextLengthExceeded
from tests.backends.engine.conftest import FAMILY_PARAMS, make_engine, make_generator, request, run, settled

PROMPTS = [
    "hi",
    "the quick brown fox",
    "a" * 37,
    "state machines and parity " * 3,
    "x = 1; y = 2; print(x + y)",
    "long prompt " * 25,  # 300 tokens: several prefill chunks under a 48-token step budget
    "0123456789",
    "ok",
]


@pytest.mark.parametrize("packed", [False, True], ids=["dense-prefill", "packed-prefill"])
@pytest.mark.parametrize("family", FAMILY_PARAMS)
async def test_greedy_and_seeded_outputs_alone_equal_busy_batch(checkpoints, family, packed):
    # the reference: each request alone through the simple Generator
    gen = make_generator(checkpoints, family)
    reqs = [request(p, rid=f"g{i}", max_tokens=8 + 3 * (i % 4)) for i, p in enumerate(PROMPTS)]
    reqs += [request(p, rid=f"s{i}", temperature=0.9, top_p=0.9, top_k=20, seed=100 + i, max_tokens=10)
             for i, p in enumerate(PROMPTS[:3])]
    alone = [await run(gen, r) for r in reqs]
    # busy: all at once, fewer seats than requests (joins and leaves mid-flight), chunked prefill
    engine = make_engine(checkpoints, family, max_num_seqs=5, max_num_batched_tokens=48, packed_prefill=packed,
                         decode_steps=3)  # fmt: skip
    try:
        busy = await asyncio.gather(*(run(engine, r) for r in reqs))
        assert [b[0] for b in busy] == [a[0] for a in alone]
        assert [b[2] for b in busy] == [a[2] for a in alone]
        s = engine.stats()
        assert s["admitted"] == len(reqs) and s["running"] == 0 and s["waiting"] == 0
        # every prompt token fed exactly once, or restored from the state cache (on for recurrent families)
        assert s["prefill_tokens"] + s["prefix_saved_tokens"] == s["prompt_tokens"]
        await settled(engine)  # nothing left behind
    finally:
        await engine.close()


async def test_long_prefill_is_chunked_while_others_decode(checkpoints):
    engine = make_engine(checkpoints, "transformer", max_num_seqs=4, max_num_batched_tokens=16)
    events: list[str] = []

    async def follow(tag: str, req) -> None:
        async for chunk in engine.generate(req):
            events.append(tag if chunk.token_ids or chunk.finish_reason else tag + "-empty")

    try:
        first = asyncio.create_task(follow("short", request("go", max_tokens=40)))
        while not events:
            await asyncio.sleep(0.005)
        await asyncio.gather(first, follow("long", request("z" * 330, max_tokens=2)))
    finally:
        await engine.close()
    # 331 prompt tokens at <= 15 a step (one token of the budget goes to the decoding request):
    # at least 22 steps of prefill, each of which also decoded the short request
    before_long = events.index("long")
    assert events[:before_long].count("short") >= 22


async def test_stop_string_across_token_boundaries(checkpoints):
    engine = make_engine(checkpoints, "transformer")
    try:
        ids, text, finish = await run(engine, request("stop strings", max_tokens=24))
        assert finish == "length" and len(text) > 8
        # a stop string that spans several byte tokens, starting mid-output
        stop = text[5:9]
        cut = text.find(stop)
        ids2, text2, finish2 = await run(engine, request("stop strings", max_tokens=24, stop=[stop, "never-seen"]))
        assert text2 == text[:cut] and finish2 == "stop"
        assert ids2 == ids[: len(ids2)] and len(ids2) < len(ids)
    finally:
        await engine.close()


async def test_cancelled_request_frees_its_row_within_one_step(checkpoints):
    engine = make_engine(checkpoints, "transformer")
    try:
        keep = asyncio.create_task(run(engine, request("keeps going", max_tokens=30)))
        stream = engine.generate(request("is abandoned", max_tokens=500))
        for _ in range(3):
            await anext(stream)
        assert engine.stats()["decoding"] == 2
        steps_at_close = engine.stats()["steps"]
        await stream.aclose()  # what the router does when the HTTP client disconnects
        while any(s.request_id == "r" and s.params.max_tokens == 500 for s in engine.scheduler.running):
            await asyncio.sleep(0.001)
        # the step in flight when the client left may finish; the next one runs without the row
        assert engine.stats()["steps"] <= steps_at_close + 2
        assert engine.stats()["cancelled"] == 1 and engine.pool.num_free == engine.pool.num_slots - 1
        await keep
    finally:
        await engine.close()


async def test_full_queue_is_overloaded_and_waiting_times_out(checkpoints):
    engine = make_engine(checkpoints, "transformer", max_num_seqs=1, max_waiting=1, queue_timeout_s=0.3)
    try:
        busy = engine.generate(request("occupies the only seat", max_tokens=400))
        await anext(busy)
        waiting = asyncio.create_task(run(engine, request("waits")))
        while engine.stats()["waiting"] < 1:
            await asyncio.sleep(0.005)
        with pytest.raises(BackendOverloaded):
            await anext(engine.generate(request("no room")))
        with pytest.raises(QueueTimeout):
            await waiting
        s = engine.stats()
        assert s["rejected"] == 1 and s["timed_out"] == 1 and s["queue_depth"] == 0
        await busy.aclose()
    finally:
        await engine.close()


async def test_context_length_checked_before_queueing(checkpoints):
    engine = make_engine(checkpoints, "transformer")
    try:
        with pytest.raises(ContextLengthExceeded):
            await anext(engine.generate(request("y" * 1000, max_tokens=100)))
        assert engine.stats()["requests"] == 0
    finally:
        await engine.close()


async def test_close_ends_running_and_waiting_requests_with_an_error(checkpoints):
    engine = make_engine(checkpoints, "mamba", max_num_seqs=1)
    running = engine.generate(request("runs", max_tokens=500))
    await anext(running)
    waiting = asyncio.create_task(run(engine, request("waits")))
    while engine.stats()["waiting"] < 1:
        await asyncio.sleep(0.005)
    await engine.close()
    got = 1
    with pytest.raises(BackendError, match="shut down"):
        async for _ in running:  # tokens decoded before the close still arrive, then the error
            got += 1
    assert got < 500
    with pytest.raises(BackendError, match="shut down"):
        await waiting
    assert not await engine.ready()
    with pytest.raises(BackendError):
        await anext(engine.generate(request("too late")))
