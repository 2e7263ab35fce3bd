"""One request at a time through the model interface: encode, prefill, decode, stream.

This is the per-backend generator behind the `BackendClient` protocol. It serialises requests
with a lock; the continuous-batching engine replaces it behind the same protocol.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import torch

from archrouter.backends import families
from archrouter.backends.base import CausalLM
from archrouter.backends.protocol import (
    BackendInfo,
    ContextLengthExceeded,
    GenerationChunk,
    GenerationRequest,
)
from archrouter.backends.sampling import sample
from archrouter.backends.stopping import StopMatcher
from archrouter.backends.tokenizer import Tokenizer, load_tokenizer


def is_trained(checkpoint: str | Path) -> bool:
    """A checkpoint is 'trained' when its folder records a training run (training.json)."""
    return (Path(checkpoint) / "training.json").is_file()


class Generator:
    def __init__(self, info: BackendInfo, model: CausalLM, tokenizer: Tokenizer):
        self.info = info
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.device = next(model.parameters()).device
        self._lock = asyncio.Lock()
        self.stats = {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0}

    @classmethod
    def from_checkpoint(
        cls,
        name: str,
        family: str,
        checkpoint: str | Path,
        *,
        context_length: int,
        device: str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> Generator:
        model = families.load(family, checkpoint, device=device, dtype=dtype)
        tokenizer = families.family_module(family).__dict__.get("load_tokenizer", load_tokenizer)(checkpoint)
        info = BackendInfo(
            name=name,
            family=family,
            context_length=context_length,
            checkpoint=str(checkpoint),
            trained=is_trained(checkpoint),
            parameters=model.num_parameters(),
        )
        return cls(info, model, tokenizer)

    def encode(self, request: GenerationRequest) -> list[int]:
        if request.messages is not None:
            return self.tokenizer.apply_chat_template(request.messages)
        return self.tokenizer.encode(request.prompt or "", add_bos=True)

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        ids = self.encode(request)
        sp = request.sampling
        if len(ids) + sp.max_tokens > self.info.context_length:
            raise ContextLengthExceeded(len(ids) + sp.max_tokens, self.info.context_length, self.info.name)
        # on the model's device, as the engine's: a seed draws the same tokens here and there
        gen = torch.Generator(device=self.device).manual_seed(sp.seed) if sp.seed is not None else None
        async with self._lock:
            self.stats["requests"] += 1
            self.stats["prompt_tokens"] += len(ids)
            async for chunk in self._decode_loop(ids, request, gen):
                yield chunk

    async def _decode_loop(
        self, ids: list[int], request: GenerationRequest, gen: torch.Generator | None
    ) -> AsyncIterator[GenerationChunk]:
        sp = request.sampling
        decoder = self.tokenizer.decoder()
        stops = StopMatcher(sp.stop)
        vocab = self.tokenizer.vocab_size
        cache = None
        step_input = ids
        n_out = 0
        while True:
            # the forward runs in a worker thread so the event loop keeps serving other requests
            token, cache = await asyncio.to_thread(self._step, step_input, cache, sp, gen, vocab)
            n_out += 1
            self.stats["completion_tokens"] += 1
            if token in self.tokenizer.eos_ids:
                yield GenerationChunk(decoder.flush() + stops.flush(), [], len(ids), n_out, "stop")
                return
            text, stopped = stops.push(decoder.push([token]))
            if stopped:
                yield GenerationChunk(text, [token], len(ids), n_out, "stop")
                return
            if n_out >= sp.max_tokens:
                tail, _ = stops.push(decoder.flush())
                yield GenerationChunk(text + tail + stops.flush(), [token], len(ids), n_out, "length")
                return
            yield GenerationChunk(text, [token], len(ids), n_out)
            step_input = [token]

    @torch.inference_mode()
    def _step(self, ids: list[int], cache, sp, gen: torch.Generator | None, vocab: int):  # noqa: ANN001, ANN202
        x = torch.tensor([ids], dtype=torch.long).to(self.device)
        logits, cache = self.model(x, cache)
        # sampled on the device; only the token comes back
        return sample(logits[0, -1, :vocab], sp, gen), cache

    async def ready(self) -> bool:
        return True

    async def close(self) -> None:
        pass

    def describe(self) -> dict:
        return {**self.info.__dict__, **self.stats}
