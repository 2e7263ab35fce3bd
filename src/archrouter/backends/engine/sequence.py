"""One request inside the engine: its tokens, its place in the cache, its own sampling and stop state."""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from archrouter.backends.base import Cache
from archrouter.backends.protocol import GenerationChunk, SamplingParams, TokenLogprob
from archrouter.backends.stopping import StopMatcher
from archrouter.backends.tokenizer import IncrementalDecoder


class Status(enum.Enum):
    WAITING = "waiting"
    PREFILL = "prefill"
    DECODE = "decode"
    FINISHED = "finished"


Emit = Callable[[GenerationChunk | BaseException], None]


@dataclass(eq=False)
class Sequence:
    seq_id: int
    request_id: str
    prompt: list[int]
    params: SamplingParams
    generator: torch.Generator | None
    decoder: IncrementalDecoder
    eos_ids: set[int]
    emit: Emit  # thread-safe: hands a chunk (or the error that ends the stream) to the request's queue
    arrival: float = field(default_factory=time.monotonic)
    status: Status = Status.WAITING
    output: list[int] = field(default_factory=list)
    num_computed: int = 0  # tokens whose effect is in the cache
    slot: int | None = None  # its row of the engine's state pool, from admission to finish
    reserved_tokens: int = 0  # KV budget taken at admission
    aborted: bool = False
    finish_reason: str | None = None
    prefix_tokens: int = 0  # prompt tokens restored from the state cache
    snapshot_at: int = 0  # prefill stops at this length once so the state cache can keep it
    pending_snapshot: tuple[int, Cache] | None = None  # latest block-aligned state seen while decoding (a copy)
    first_token_at: float | None = None
    # where the step thread batches this request's chunks: all of a step's chunks for one event loop go
    # in one call_soon_threadsafe (one wake-up write a step, not one a token); None: `emit` each chunk
    loop: asyncio.AbstractEventLoop | None = None
    queue: asyncio.Queue | None = None
    index: int = 0  # the choice this sequence answers (prompt number * n + sample number)
    # n > 1: the other samples of this prompt, forked from this sequence's cache when its prompt is in
    forks: list[Sequence] = field(default_factory=list)
    parent: Sequence | None = None
    matcher: Any = None  # llguidance matcher when the output must follow a grammar
    count_slot: int = 0  # row of the runner's TokenCounts (0: no penalties)
    vocab_bytes: list[bytes] | None = None  # each token's bytes, for logprobs
    pending_logprobs: tuple[float, list[tuple[int, float]]] | None = None  # the sampler's, for the next token

    def __post_init__(self) -> None:
        self.stops = StopMatcher(self.params.stop)

    @property
    def tokens(self) -> list[int]:
        return self.prompt + self.output

    @property
    def prefill_left(self) -> int:
        return max(0, len(self.prompt) - self.num_computed)

    @property
    def last_token(self) -> int:
        return self.output[-1] if self.output else self.prompt[-1]

    def to_feed(self, n: int) -> list[int]:
        """The next `n` tokens the model has not seen (prompt chunk, or the last sampled token)."""
        if self.num_computed + n <= len(self.prompt):  # no copy of the whole history per chunk
            return self.prompt[self.num_computed : self.num_computed + n]
        return self.tokens[self.num_computed : self.num_computed + n]

    def _logprob(self, token: int) -> list[TokenLogprob] | None:
        lp, self.pending_logprobs = self.pending_logprobs, None
        if lp is None or self.vocab_bytes is None:
            return None
        vb = self.vocab_bytes
        k = self.params.logprobs or 0
        return [TokenLogprob(*token_repr(vb[token]), lp[0], [(*token_repr(vb[t]), v) for t, v in lp[1][:k]])]

    def append(self, token: int) -> GenerationChunk:
        """Record a sampled token; the chunk to stream (finish_reason set when this ends the request)."""
        chunk = self._append(token)
        chunk.cached_tokens = self.prefix_tokens
        return chunk

    def _append(self, token: int) -> GenerationChunk:
        if self.first_token_at is None:
            self.first_token_at = time.monotonic()
        self.output.append(token)
        n_out, n_in, i = len(self.output), len(self.prompt), self.index
        lps = self._logprob(token)
        if token in self.eos_ids:
            self.finish_reason = "stop"
            # the end token's logprob is reported (as vLLM does), its text is not
            return GenerationChunk(self.decoder.flush() + self.stops.flush(), [], n_in, n_out, "stop", i, lps)
        grammar_done = False
        if self.matcher is not None:
            self.matcher.consume_token(token)
            grammar_done = self.matcher.is_stopped()  # nothing but the end can follow: end here
        text, stopped = self.stops.push(self.decoder.push([token]))
        if stopped:
            self.finish_reason = "stop"
            return GenerationChunk(text, [token], n_in, n_out, "stop", i, lps)
        if n_out >= self.params.max_tokens or grammar_done:
            self.finish_reason = "stop" if grammar_done else "length"
            tail, stopped = self.stops.push(self.decoder.flush())
            if stopped:
                self.finish_reason = "stop"
                return GenerationChunk(text + tail, [token], n_in, n_out, "stop", i, lps)
            return GenerationChunk(text + tail + self.stops.flush(), [token], n_in, n_out, self.finish_reason, i, lps)
        return GenerationChunk(text, [token], n_in, n_out, None, i, lps)


def token_repr(b: bytes) -> tuple[str, list[int]]:
    """A token's text and bytes for logprobs: a special token's name (without the 0xFF marker of the vocabulary
    table), else its bytes as UTF-8 (a partial character as U+FFFD; the exact bytes go beside it)."""
    if b.startswith(b"\xff"):
        b = b[1:]
    return b.decode("utf-8", errors="replace"), list(b)
