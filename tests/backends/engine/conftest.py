"""Tiny random checkpoints per family (those that have landed), engines over them, helpers."""

from __future__ import annotations

import asyncio
import importlib
import time
from pathlib import Path

import pytest

from archrouter.backends.engine import Engine, EngineConfig
from archrouter.backends.families import FAMILIES, init_random
from archrouter.backends.generator import Generator
from archrouter.backends.protocol import GenerationRequest, SamplingParams

CONTEXT = 1024


def family_available(family: str) -> bool:
    try:
        importlib.import_module(FAMILIES[family])
    except ImportError:
        return False
    return True


ALL_FAMILIES = list(FAMILIES)
# every family is a parameter; one whose module has not landed yet is skipped, not silently dropped
FAMILY_PARAMS = [
    pytest.param(f, marks=pytest.mark.skipif(not family_available(f), reason=f"backends.{f} not on this branch"))
    for f in ALL_FAMILIES
]
RECURRENT_PARAMS = [p for p in FAMILY_PARAMS if p.values[0] != "transformer"]


class Checkpoints(dict):
    """family -> tiny random checkpoint folder, written on first use (one family's failure stays its own)."""

    def __init__(self, root: Path):
        super().__init__()
        self.root = root

    def __missing__(self, family: str) -> Path:
        init_random(family, "tiny", self.root / family, seed=10 + ALL_FAMILIES.index(family))
        self[family] = self.root / family
        return self[family]


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory) -> Checkpoints:
    return Checkpoints(tmp_path_factory.mktemp("engine-models"))


def make_engine(checkpoints: dict[str, Path], family: str, *, name: str | None = None, state_store=None,
                **config) -> Engine:
    return Engine.from_checkpoint(name or family, family, checkpoints[family], context_length=CONTEXT,
                                  config=EngineConfig(redis_url=None, **config), state_store=state_store)


def make_generator(checkpoints: dict[str, Path], family: str) -> Generator:
    return Generator.from_checkpoint(family, family, checkpoints[family], context_length=CONTEXT)


def request(prompt: str | None = None, *, messages=None, rid: str = "r", **sampling) -> GenerationRequest:
    sampling.setdefault("temperature", 0.0)
    sampling.setdefault("max_tokens", 12)
    return GenerationRequest(rid, SamplingParams(**sampling), prompt=prompt, messages=messages)


async def run(client, req: GenerationRequest) -> tuple[list[int], str, str | None]:
    """(token ids, text, finish reason) of one whole stream."""
    ids, text, finish = [], "", None
    async for chunk in client.generate(req):
        ids += chunk.token_ids
        text += chunk.text
        finish = chunk.finish_reason
    return ids, text, finish


async def settled(engine: Engine, timeout: float = 10.0) -> None:
    """Wait until the step thread has freed every finished row (it does so at its next step)."""
    deadline = time.monotonic() + timeout
    while engine.pool.num_free < engine.pool.num_slots:
        assert time.monotonic() < deadline, "engine kept rows of finished requests"
        await asyncio.sleep(0.005)
