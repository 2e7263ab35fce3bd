"""The engine on the GPU (skipped without one): fp32 greedy outputs alone equal those in a busy batch, for
every family, with CUDA graphs (the default) and without; bf16 mismatches are counted, not asserted."""

from __future__ import annotations

import asyncio

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
