"""A response's choices: backend chunks in (several choices interleaved), OpenAI bodies and SSE events out.

A request asks for `prompts x n` choices; the backend streams chunks tagged with their choice index.
`Choices` gathers them (text, finish reason, tokens, logprobs per choice) and sums the usage as
OpenAI does: each prompt's tokens once, every choice's completion tokens.
"""

from __future__ import annotations

from typing import Any

from archrouter.backends.protocol import GenerationChunk, TokenLogprob
from archrouter.router.schemas import PromptTokensDetails, Usage, now


class Choices:
    def __init__(self, count: int, n: int, *, chat: bool, logprobs: bool):
        self.count, self.n, self.chat, self.want_logprobs = count, n, chat, logprobs
        self.text = [""] * count
        self.finish: list[str | None] = [None] * count
        self.completion = [0] * count
        self.prompt = [0] * count
        self.cached = [0] * count
        self.logprobs: list[list[TokenLogprob]] = [[] for _ in range(count)]
        self.offsets: list[list[int]] = [[] for _ in range(count)]
        self.chunks = 0

    def add(self, chunk: GenerationChunk) -> None:
        i = chunk.index
        if not 0 <= i < self.count:
            raise ValueError(f"backend sent choice {i}; the request has {self.count}")
        self.chunks += 1
        for lp in chunk.logprobs or []:
            self.offsets[i].append(sum(len(t.token) for t in self.logprobs[i]))
            self.logprobs[i].append(lp)
        self.text[i] += chunk.text
        self.completion[i] = chunk.completion_tokens
        self.prompt[i] = chunk.prompt_tokens
        self.cached[i] = chunk.cached_tokens
        if chunk.finish_reason:
            self.finish[i] = chunk.finish_reason

    @property
    def done(self) -> bool:
        return all(f is not None for f in self.finish)

    # what the decision record, metrics and rate limiter read
    @property
    def prompt_tokens(self) -> int:
        return self._once_per_prompt(self.prompt)

    @property
    def cached_tokens(self) -> int:
        return self._once_per_prompt(self.cached)

    def _once_per_prompt(self, per_choice: list[int]) -> int:
        """A prompt's count once, though its `n` choices each report it."""
        return sum(max(per_choice[p * self.n:(p + 1) * self.n]) for p in range(self.count // self.n))

    @property
    def completion_tokens(self) -> int:
        return sum(self.completion)

    @property
    def finish_reason(self) -> str | None:
        return self.finish[0] if self.count == 1 else ",".join(f or "none" for f in self.finish)

    def usage(self) -> Usage:
        p, c = self.prompt_tokens, self.completion_tokens
        return Usage(prompt_tokens=p, completion_tokens=c, total_tokens=p + c,
                     prompt_tokens_details=PromptTokensDetails(cached_tokens=self.cached_tokens))

    # ------------------------------------------------------------------ bodies

    def response(self, rid: str, model: str) -> dict[str, Any]:
        choices = []
        for i in range(self.count):
            lp = self._logprobs(self.logprobs[i], self.offsets[i])
            if self.chat:
                choices.append({"index": i, "message": {"role": "assistant", "content": self.text[i]},
                                "finish_reason": self.finish[i] or "stop", "logprobs": lp})
            else:
                choices.append({"index": i, "text": self.text[i], "finish_reason": self.finish[i] or "stop",
                                "logprobs": lp})
        return {"id": rid, "object": "chat.completion" if self.chat else "text_completion", "created": now(),
                "model": model, "choices": choices, "usage": self.usage().model_dump()}

    def event(self, rid: str, model: str, chunk: GenerationChunk) -> dict[str, Any] | None:
        """The SSE body for one backend chunk (None when it carries nothing to send)."""
        if not (chunk.text or chunk.finish_reason or chunk.logprobs):
            return None
        i = chunk.index
        start = len(self.logprobs[i]) - len(chunk.logprobs or [])
        lp = self._logprobs(chunk.logprobs or [], self.offsets[i][start:])
        if self.chat:
            choice = {"index": i, "delta": {"content": chunk.text} if chunk.text else {},
                      "finish_reason": chunk.finish_reason, "logprobs": lp}
        else:
            choice = {"index": i, "text": chunk.text, "finish_reason": chunk.finish_reason, "logprobs": lp}
        return self._frame(rid, model, [choice])

    def role_events(self, rid: str, model: str) -> list[dict[str, Any]]:
        """Chat streams open each choice with the assistant role, as OpenAI's do."""
        if not self.chat:
            return []
        return [self._frame(rid, model, [{"index": i, "delta": {"role": "assistant", "content": ""},
                                          "finish_reason": None, "logprobs": None}]) for i in range(self.count)]

    def usage_event(self, rid: str, model: str) -> dict[str, Any]:
        return {**self._frame(rid, model, []), "usage": self.usage().model_dump()}

    def _frame(self, rid: str, model: str, choices: list[dict]) -> dict[str, Any]:
        return {"id": rid, "object": "chat.completion.chunk" if self.chat else "text_completion", "created": now(),
                "model": model, "choices": choices}

    def _logprobs(self, lps: list[TokenLogprob], offsets: list[int]) -> dict[str, Any] | None:
        if not self.want_logprobs:
            return None
        if self.chat:
            return {"content": [{"token": t.token, "logprob": t.logprob, "bytes": t.bytes,
                                 "top_logprobs": [{"token": s, "logprob": v, "bytes": b} for s, b, v in t.top]}
                                for t in lps], "refusal": None}
        return {"tokens": [t.token for t in lps], "token_logprobs": [t.logprob for t in lps],
                "top_logprobs": [{s: v for s, _, v in t.top} for t in lps],
                "text_offset": list(offsets)}
