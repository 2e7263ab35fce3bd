"""The engine on the GPU (skipped without one): fp32 greedy outputs alone equal those in a busy batch, for
every family, with CUDA graphs (the default) and without; bf16 mismatches are counted, not asserted."""

from __future__ import annotations

import asyncio
import json

import pytest
import torch

from archrouter.backends.engine import Engine, EngineConfig
from tests.backends.engine.conftest import FAMILY_PARAMS, request, run
from tests.backends.engine.test_batching import PROMPTS

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")


def cuda_engine(checkpoints, family: str, **config) -> Engine:  # noqa: ANN001
    return Engine.from_checkpoint(family, family, checkpoints[family], context_length=1024, device="cuda",
                                  config=EngineConfig(redis_url=None, state_cache="off", max_num_seqs=16,
                                                      **config))  # fmt: skip


@pytest.mark.parametrize("family", FAMILY_PARAMS)
async def test_fp32_greedy_alone_equals_busy_batch_with_and_without_graphs(checkpoints, family):
    reqs = [request(p, rid=f"g{i}", max_tokens=10 + (i % 3)) for i, p in enumerate(PROMPTS * 2)]
    outs = {}
    for graphs in (True, False):
        engine = cuda_engine(checkpoints, family, cuda_graphs=graphs)
        try:
            alone = [(await run(engine, r))[0] for r in reqs]
            busy = [b[0] for b in await asyncio.gather(*(run(engine, r) for r in reqs))]
            assert busy == alone
            s = engine.stats()
            assert s["decode_graphs_on"] == int(graphs) and (s["decode_graph_replays"] > 0) == graphs
            assert s["decode_rounds"] > 0  # several decode steps a read-back on CUDA
            outs[graphs] = alone
        finally:
            await engine.close()
    assert outs[True] == outs[False]


SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}, "n": {"type": "integer", "minimum": 0,
          "maximum": 99}}, "required": ["ok", "n"], "additionalProperties": False}


async def _choices(engine: Engine, req) -> dict[int, tuple[list[int], str, str | None, list]]:  # noqa: ANN001
    """index -> (token ids, text, finish reason, logprob entries) of every choice of one request."""
    out: dict[int, list] = {}
    async for c in engine.generate(req):
        o = out.setdefault(c.index, [[], "", None, []])
        o[0] += c.token_ids
        o[1] += c.text
        o[2] = c.finish_reason or o[2]
        o[3] += c.logprobs or []
    return {i: tuple(o) for i, o in sorted(out.items())}


@pytest.mark.parametrize("family", FAMILY_PARAMS)
async def test_openai_extras_on_cuda_batched_equal_alone(checkpoints, family):
    """The sampler's extras on CUDA, graphs on, fp32: n forked from one prefill, seeded samples, logprobs,
    penalties and logit bias, JSON-schema grammar; each row keeps its own parameters in a busy batch."""
    import jsonschema
    from llguidance import LLMatcher

    grammar = LLMatcher.grammar_from_json_schema(json.dumps(SCHEMA), defaults={"whitespace_flexible": False})
    extras = dict(presence_penalty=0.7, frequency_penalty=0.3, repetition_penalty=1.5, logit_bias={5: 2.0})
    reqs = [request(PROMPTS[0], rid="n-greedy", n=3, max_tokens=8),
            request(PROMPTS[0], rid="one-greedy", max_tokens=8),
            request(PROMPTS[1], rid="n-seeded", n=3, temperature=1.0, seed=5, max_tokens=8),
            request(PROMPTS[2], rid="logprobs", logprobs=3, max_tokens=8, **extras),
            request(PROMPTS[1], rid="json-greedy", grammar=grammar, max_tokens=40),
            request(PROMPTS[2], rid="json-seeded", n=2, grammar=grammar, temperature=1.0, seed=9, max_tokens=40)]
    engine = cuda_engine(checkpoints, family)
    try:
        alone = [await _choices(engine, r) for r in reqs]
        busy = await asyncio.gather(*(_choices(engine, r) for r in reqs + [request(p) for p in PROMPTS]))
        assert engine.stats()["decode_graph_replays"] > 0
    finally:
        await engine.close()
    for a, b in zip(alone, busy, strict=False):
        assert [c[:3] for c in a.values()] == [c[:3] for c in b.values()]
        for la, lb in zip(a[0][3], b[0][3], strict=True):
            assert lb.logprob == pytest.approx(la.logprob, abs=1e-4)
    n_greedy, one, n_seeded, lp, *json_reqs = alone
    assert len({c[1] for c in n_greedy.values()}) == 1 and n_greedy[0][1] == one[0][1] and len(n_greedy) == 3
    assert len(n_seeded) == 3
    entries = lp[0][3]
    assert len(entries) == len(lp[0][0]) and all(len(e.top) == 3 for e in entries)
    assert all(e.top[0][2] >= e.logprob - 1e-5 and e.logprob <= 0 for e in entries)
    for r in json_reqs:
        for _, text, finish, _ in r.values():
            assert finish == "stop", text
            jsonschema.validate(json.loads(text), SCHEMA)

    # the first logprobs (prefill only) on CUDA equal the CPU engine's
    cpu = Engine.from_checkpoint(family, family, checkpoints[family], context_length=1024, device="cpu",
                                 config=EngineConfig(redis_url=None, state_cache="off"))
    try:
        first = (await _choices(cpu, request(PROMPTS[2], logprobs=3, max_tokens=1, **extras)))[0][3][0]
    finally:
        await cpu.close()
    assert first.token == entries[0].token and first.logprob == pytest.approx(entries[0].logprob, abs=1e-3)
    assert [t for t, _, _ in first.top] == [t for t, _, _ in entries[0].top]
