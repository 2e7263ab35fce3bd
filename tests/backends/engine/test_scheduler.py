"""The scheduler's own rules, stepped without a model: budgets, seats, KV capacity, FCFS, snapshot cuts."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from archrouter.backends.engine.config import EngineConfig
from archrouter.backends.engine.scheduler import Scheduler
from archrouter.backends.engine.sequence import Sequence, Status
from archrouter.backends.protocol import BackendOverloaded, SamplingParams
from archrouter.backends.tokenizer import ByteTokenizer


def seq(i: int, prompt_len: int, max_tokens: int = 4) -> Sequence:
    tok = ByteTokenizer()
    return Sequence(i, f"r{i}", [65] * prompt_len, SamplingParams(temperature=0, max_tokens=max_tokens), None,
                    tok.decoder(), set(tok.eos_ids), lambda _: None)


def step(s: Scheduler) -> tuple[list[Sequence], object]:
    """One engine step's bookkeeping, as Engine._step does it around the model."""
    admitted = s.admit()
    plan = s.plan()
    for q in plan.decode:
        q.num_computed += 1
        q.output.append(65)
    for q, n in plan.prefill:
        q.num_computed += n
        if q.prefill_left == 0:
            q.status = Status.DECODE
            q.output.append(65)
    for q in [*plan.decode, *(q for q, _ in plan.prefill)]:
        if len(q.output) >= q.params.max_tokens:
            s.finish(q)
    return admitted, plan


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 200), st.integers(1, 12)), min_size=1, max_size=30),
       st.integers(1, 8), st.integers(8, 64), st.integers(100, 600), st.integers(0, 2**16))
def test_every_step_respects_the_budgets_and_everything_finishes(reqs, seats, step_tokens, kv, seed):
    if step_tokens < seats:
        step_tokens = seats
    cfg = EngineConfig(max_num_seqs=seats, max_num_batched_tokens=step_tokens, kv_token_budget=kv, max_waiting=1000,
                       redis_url=None)
    s = Scheduler(cfg, "tokens", context_length=4096)
    rnd = random.Random(seed)
    pending = [seq(i, p, m) for i, (p, m) in enumerate(reqs)]
    admitted_order, steps = [], 0
    while pending or s.has_work():
        for _ in range(rnd.randint(0, 3)):  # arrivals between steps
            if pending:
                s.add(pending.pop(0))
        admitted, plan = step(s)
        admitted_order += [q.seq_id for q in admitted]
        steps += 1
        assert plan.num_tokens <= step_tokens
        assert len(s.running) <= seats
        # the KV budget holds, except for one oversized request admitted alone
        assert s.kv_reserved <= kv or len(s.running) == 1
        assert steps < 10_000
    assert admitted_order == sorted(admitted_order)  # first come, first served
    assert s.kv_reserved == 0 and s.counters["admitted"] == len(reqs)


def test_prompt_chunks_stop_at_the_snapshot_boundary_then_continue():
    s = Scheduler(EngineConfig(max_num_batched_tokens=64, redis_url=None), "slots", context_length=4096)
    q = seq(0, 150)
    s.add(q)
    s.admit()
    q.snapshot_at = 128
    chunks = []
    while q.status is Status.PREFILL:
        (got, n), = s.plan().prefill
        chunks.append(n)
        q.num_computed += n
        if q.prefill_left == 0:
            q.status = Status.DECODE
    assert chunks == [64, 64, 22] and sum(chunks[:2]) == 128


def test_many_chunk_lengths_are_rounded_to_powers_of_two():
    s = Scheduler(EngineConfig(max_num_seqs=8, max_num_batched_tokens=512, max_prefill_shapes=2, redis_url=None),
                  "slots", context_length=4096)
    for i, n in enumerate([5, 9, 17, 30, 64]):
        s.add(seq(i, n))
    s.admit()
    lengths = [n for _, n in s.plan().prefill]
    assert lengths == [4, 8, 16, 16, 64]


def test_recurrent_capacity_is_seats_and_the_queue_is_bounded():
    s = Scheduler(EngineConfig(max_num_seqs=2, max_waiting=1, redis_url=None), "slots", context_length=64)
    qs = [seq(i, 40, 1000) for i in range(3)]  # 40 + 1000 tokens each: no KV budget applies to slots
    for q in qs:
        s.add(q)
    with pytest.raises(BackendOverloaded):
        s.add(seq(9, 4))
    assert [q.seq_id for q in s.admit()] == [0, 1]
    assert s.stats()["slots_used"] == 2 and s.stats()["waiting"] == 1
    s.abort(qs[2])
    assert s.stats()["waiting"] == 0 and s.counters["cancelled"] == 1
