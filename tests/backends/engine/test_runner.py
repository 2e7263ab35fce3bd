"""The runner's host path: batched sampling equals per-request sampling, and a step reads the device once."""

from __future__ import annotations

import asyncio

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from archrouter.backends import families
from archrouter.backends.engine.graphs import DecodeGraphs
from archrouter.backends.engine.pools import KVSlots, StatePool
from archrouter.backends.engine.runner import ModelRunner
from archrouter.backends.engine.sequence import Sequence, Status
from archrouter.backends.protocol import SamplingParams
from archrouter.backends.sampling import sample, sample_batch
from archrouter.backends.tokenizer import load_tokenizer
from tests.backends.engine.conftest import FAMILY_PARAMS, make_engine, make_generator, request, run, settled
from tests.backends.engine.test_batching import PROMPTS

PARAMS = [
    SamplingParams(temperature=0.0),
    SamplingParams(temperature=0.8, seed=1),
    SamplingParams(temperature=1.3, top_k=5, seed=2),
    SamplingParams(temperature=0.7, top_p=0.6, seed=3),
    SamplingParams(temperature=1.0, top_k=12, top_p=0.9, seed=4),
    SamplingParams(temperature=1e-300),  # greedy in float32
    SamplingParams(temperature=2.0, top_k=1, seed=5),  # top_k 1: the argmax whatever the draw
    SamplingParams(temperature=0.5, top_p=1e-12, seed=6),  # nucleus of one: the argmax
]


def generators(params: list[SamplingParams]) -> list[torch.Generator | None]:
    return [torch.Generator().manual_seed(p.seed) if p.seed is not None else None for p in params]


def test_batched_sampling_equals_per_request_sampling_for_the_same_seeds():
    torch.manual_seed(0)
    steps = [torch.randn(len(PARAMS), 50) * 3 for _ in range(20)]
    batch_gens, row_gens = generators(PARAMS), generators(PARAMS)
    for logits in steps:  # the generators advance step after step, the same way in both
        batched = sample_batch(logits, PARAMS, batch_gens).tolist()
        alone = [sample(logits[i], p, row_gens[i]) for i, p in enumerate(PARAMS)]
        assert batched == alone
        for i in (0, 5, 6, 7):  # greedy, float32-greedy, top_k 1, a nucleus of one token
            assert batched[i] == int(logits[i].argmax())


def test_a_seeded_row_draws_the_same_whatever_rows_sit_beside_it():
    torch.manual_seed(1)
    logits = torch.randn(len(PARAMS), 40)
    ref = sample_batch(logits, PARAMS, generators(PARAMS)).tolist()
    order = [3, 7, 0, 6, 1, 5, 4, 2]
    shuffled = sample_batch(logits[order], [PARAMS[i] for i in order], generators([PARAMS[i] for i in order]))
    assert [ref[i] for i in order] == shuffled.tolist()
    # and inside a bigger batch of unseeded rows
    noise = torch.randn(5, 40)
    big = torch.cat([noise, logits])
    unseeded = [SamplingParams(temperature=1.0)] * 5
    out = sample_batch(big, unseeded + PARAMS, [None] * 5 + generators(PARAMS)).tolist()
    assert out[5:] == ref


def test_sampling_follows_the_distribution():
    # exponential race: frequencies match the softmax (within sampling error)
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = probs.log().repeat(4000, 1)
    params = [SamplingParams(temperature=1.0)] * 4000
    counts = torch.bincount(sample_batch(logits, params, [None] * 4000), minlength=4).float() / 4000
    assert torch.allclose(counts, probs, atol=0.03)


class ScalarReads(TorchDispatchMode):
    """Counts device reads hidden in int(t) / t.item() / bool(t), and tensors made from host data."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0
        self.host_tensors = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        if func in (torch.ops.aten._local_scalar_dense.default, torch.ops.aten.item.default):
            self.reads += 1
        if func is torch.ops.aten.lift_fresh.default:  # torch.tensor(list): a host->device copy on a GPU
            self.host_tensors += 1
        return func(*args, **(kwargs or {}))


def make_seq(i: int, prompt: list[int], params: SamplingParams, tokenizer) -> Sequence:  # noqa: ANN001
    gen = torch.Generator().manual_seed(params.seed) if params.seed is not None else None
    seq = Sequence(i, f"r{i}", prompt, params, gen, tokenizer.decoder(), set(tokenizer.eos_ids), lambda _: None)
    seq.status = Status.PREFILL
    return seq


@pytest.mark.parametrize("family", FAMILY_PARAMS)
def test_a_decode_step_reads_the_device_once(checkpoints, family):
    model = families.load(family, checkpoints[family])  # outside inference mode, as the engine loads it
    tok = families.family_module(family).__dict__.get("load_tokenizer", load_tokenizer)(checkpoints[family])
    with torch.inference_mode():
        check_steps(model, tok, family)


def check_steps(model, tok, family: str) -> None:  # noqa: ANN001
    pool = KVSlots(model, model.new_kv_pool(256, 16), 8) if family == "transformer" else StatePool(model, 8)
    runner = ModelRunner(pool, tok.vocab_size)
    seqs = [
        make_seq(i, tok.encode(f"prompt number {i} " * (i + 1), add_bos=True), p, tok) for i, p in enumerate(PARAMS[:5])
    ]
    for s in seqs:
        s.slot = pool.alloc()
    # prefill: every prompt in one packed forward, whatever the lengths
    first = runner.step([], [(s, len(s.prompt)) for s in seqs])
    assert [s for s, _ in first] == seqs and runner.syncs == 1
    for s, t in first:
        s.output.append(t)
        s.status = Status.DECODE
    for step in range(3):
        with ScalarReads() as probe:
            out = runner.step(seqs, [])
        assert [s for s, _ in out] == seqs
        for s, t in out:
            s.output.append(t)
        # one read-back of the sampled ids (counted by the runner), nothing else: no int()/item()/bool()
        assert runner.syncs == 2 + step
        assert probe.reads == 0
        if family != "transformer":  # host data reaching the device: the slots and the sampling parameters
            assert probe.host_tensors <= 2
    # rows leave and a new one joins mid-flight: nothing moves in the pool, still no hidden reads
    late = make_seq(9, tok.encode("late", add_bos=True), PARAMS[1], tok)
    late.slot = pool.alloc()
    done = runner.step([seqs[1], seqs[3]], [(late, len(late.prompt))])
    assert [s for s, _ in done] == [seqs[1], seqs[3], late]
    pool.release(seqs[0].slot)
    with ScalarReads() as probe:
        out = runner.step([seqs[1], late, seqs[3]], [])
    assert [s for s, _ in out] == [seqs[1], late, seqs[3]]
    assert probe.reads == 0
    # a decode round: several steps queued, one read-back, the same tokens as single steps
    rows = [seqs[1], late, seqs[3]]
    syncs = runner.syncs
    with ScalarReads() as probe:
        tokens = runner.decode_round(rows, 3)
    assert runner.syncs == syncs + 1 and probe.reads == 0
    assert [len(t) for t in tokens] == [3, 3, 3]


def test_transformer_cache_tracks_lengths_on_the_host(checkpoints):
    model = families.load("transformer", checkpoints["transformer"])
    with torch.inference_mode():
        _, cache = model(torch.tensor([[1, 2, 3], [4, 5, 6]]))
        _, cache = model(torch.tensor([[7], [8]]), cache)
        assert cache.host_lengths == [4, 4] == cache.lengths.tolist()
        part = cache.gather([1])
        joined = type(cache).concat([part, model.init_cache(1)])
        assert joined.host_lengths == [4, 0] == joined.lengths.tolist()
        # lengths replaced from outside: the mirror stops being trusted and is read again
        joined.tensors["lengths"] = torch.tensor([2, 0])
        assert joined.host_lengths is None
        _, joined = model(torch.tensor([[9], [9]]), joined)
        assert joined.host_lengths == [3, 1] == joined.lengths.tolist()


@pytest.mark.parametrize("family", FAMILY_PARAMS)
async def test_decode_on_static_graph_buffers_equals_the_generator(checkpoints, family):
    """The captured-decode buffer logic (static slots, bucket padding on the scratch slot, the Transformer's
    static block tables) with eager forwards in place of replays: the graph itself needs a GPU, everything
    around it runs here."""
    gen = make_generator(checkpoints, family)
    reqs = [request(p, rid=f"g{i}", max_tokens=6 + 2 * (i % 3)) for i, p in enumerate(PROMPTS)]
    reqs += [
        request(p, rid=f"s{i}", temperature=0.9, top_k=20, seed=7 + i, max_tokens=8) for i, p in enumerate(PROMPTS[:2])
    ]
    alone = [await run(gen, r) for r in reqs]
    engine = make_engine(checkpoints, family, max_num_seqs=6, max_num_batched_tokens=48, state_cache="off",
                         decode_steps=3)  # fmt: skip
    graphs = DecodeGraphs(engine.pool, engine.runner.last_token, [1, 2, 4], capture=False,
                          max_context=engine.info.context_length)  # 5-6 rows: past the largest, eager
    engine.runner.graphs = graphs  # before any request reaches the step thread
    try:
        busy = await asyncio.gather(*(run(engine, r) for r in reqs))
        assert [b[0] for b in busy] == [a[0] for a in alone]
        assert graphs.replays > 0 and graphs.disabled is None
        assert engine.stats()["decode_graph_replays"] == graphs.replays
        await settled(engine)
    finally:
        await engine.close()


@pytest.mark.parametrize("family", FAMILY_PARAMS)
async def test_decode_rounds_run_ahead_and_drop_what_follows_a_stop(checkpoints, family):
    """Decode rounds (several steps, one read-back), the next launched before the last one's tokens are
    read: the same tokens as one request at a time, with stops and max_tokens cut exactly."""
    gen = make_generator(checkpoints, family)
    reqs = [request(p, rid=f"a{i}", max_tokens=17 + 5 * i) for i, p in enumerate(PROMPTS[:4])]
    alone = [await run(gen, r) for r in reqs]
    stop = alone[1][1][4:6]  # a stop string a few tokens into one answer: the tokens after it are dropped
    reqs[1] = request(PROMPTS[1], rid="a1", max_tokens=22, stop=[stop])
    engine = make_engine(checkpoints, family, max_num_seqs=4, state_cache="off", decode_steps=4)
    try:
        busy = await asyncio.gather(*(run(engine, r) for r in reqs))
        for i, (b, a) in enumerate(zip(busy, alone, strict=True)):
            if i == 1:
                assert b[1] == a[1][: a[1].find(stop)] and b[2] == "stop"
            else:
                assert b[0] == a[0] and b[2] == a[2]
        s = engine.stats()
        assert s["decode_rounds"] > 0 and s["decode_rounds_ahead"] > 0
        await settled(engine)
    finally:
        await engine.close()
