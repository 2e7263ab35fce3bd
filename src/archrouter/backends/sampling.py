"""Sampling: a whole batch in one call, each row with its own parameters, all of it on the device.

`sample_batch` is what the engine runs once per step over every row that needs a token (`sample_rows`
is the same call returning logprobs too); `sample` is the same function on one row (the per-request
generator uses it), so a seeded request draws the same tokens alone, in the generator, or inside any
batch.

Per row, in vLLM's order: logit bias, the grammar's token mask, repetition / frequency / presence
penalties (from the row's token counts, kept on the device by `TokenCounts`), temperature, top-k,
top-p, min-p, then the draw. Greedy rows take the argmax of the processed logits. Logprobs are the
model's own distribution (log-softmax of the raw logits), as vLLM reports them by default.

A draw is an exponential race: token = argmax(p / q) with q ~ Exp(1) per vocabulary entry, which picks
token i with probability p_i (the Gumbel-max trick in another form, as vLLM samples). Each seeded row
draws its q from its own generator, vocabulary-wide, so what a row draws never depends on the rows beside
it; unseeded rows share one draw from the default generator. Nothing here reads a device tensor back;
a step that uses none of the extras runs exactly the plain path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from archrouter.backends.protocol import SamplingParams

# a temperature that is 0 in float32 means greedy too (dividing by it would make 0/0 = nan)
TINY = torch.finfo(torch.float32).tiny


def is_greedy(params: SamplingParams) -> bool:
    return params.temperature < TINY


def has_penalty(p: SamplingParams) -> bool:
    return bool(p.presence_penalty or p.frequency_penalty or p.repetition_penalty != 1.0)


@dataclass
class Sampled:
    """One step's draws, on the device: tokens [B]; with logprobs, the chosen token's logprob [B] and the
    k best alternatives [B, k] (k: the largest any row asked for)."""

    tokens: torch.Tensor
    logprob: torch.Tensor | None = None
    top_ids: torch.Tensor | None = None
    top_logprobs: torch.Tensor | None = None

    def packed(self) -> torch.Tensor:
        """Everything in one tensor, so the host reads it in one copy: [B] ids, or [B, 2 + 2k] float64
        (ids are exact in float64)."""
        if self.logprob is None:
            return self.tokens
        parts = [self.tokens[:, None].double(), self.logprob[:, None].double()]
        if self.top_ids is not None:
            parts += [self.top_ids.double(), self.top_logprobs.double()]
        return torch.cat(parts, 1)

    @staticmethod
    def unpack(host: list) -> list[tuple[int, float | None, list[tuple[int, float]]]]:
        """(token, logprob, [(alternative, logprob), ...]) per row from `packed().tolist()`."""
        out = []
        for row in host:
            if not isinstance(row, list):
                out.append((int(row), None, []))
                continue
            k = (len(row) - 2) // 2
            out.append((int(row[0]), row[1], [(int(row[2 + j]), row[2 + k + j]) for j in range(k)]))
        return out


class TokenCounts:
    """How often each sequence produced each token (and which tokens its prompt holds), one row a slot,
    on the device. Penalised rows gather their counts from here each step and add their draws back
    with one scatter, so no count ever crosses to the host. Slot 0 stays all-zero (rows without
    penalties read it). Grows by doubling; allocated on first use only."""

    def __init__(self, vocab: int, device: torch.device):
        self.vocab, self.device = vocab, device
        self.counts: torch.Tensor | None = None  # [slots, vocab] float32: generated tokens
        self.prompt: torch.Tensor | None = None  # [slots, vocab] bool: tokens of the prompt
        self.free: list[int] = []

    def alloc(self, prompt: Sequence[int]) -> int:
        if not self.free:
            old = 0 if self.counts is None else self.counts.shape[0]
            new = max(8, 2 * old)
            counts = torch.zeros(new, self.vocab, device=self.device)
            seen = torch.zeros(new, self.vocab, dtype=torch.bool, device=self.device)
            if self.counts is not None:
                counts[:old], seen[:old] = self.counts, self.prompt
            self.counts, self.prompt = counts, seen
            self.free = list(range(new - 1, max(old, 1) - 1, -1))
        slot = self.free.pop()
        self.counts[slot].zero_()
        self.prompt[slot].zero_()
        ids = torch.tensor([t for t in prompt if 0 <= t < self.vocab], dtype=torch.long)
        if len(ids):
            self.prompt[slot].index_fill_(0, ids.to(self.device, non_blocking=True), True)
        return slot

    def release(self, slot: int) -> None:
        if slot > 0:
            self.free.append(slot)

    def rows(self, slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.counts.index_select(0, slots), self.prompt.index_select(0, slots)

    def add(self, slots: torch.Tensor, tokens: torch.Tensor) -> None:
        """Count each row's draw (slot 0's rows are not counted: their draw lands on the zero row, undone)."""
        ones = torch.ones_like(tokens, dtype=self.counts.dtype)
        self.counts.index_put_((slots, tokens), ones, accumulate=True)
        self.counts[0].zero_()


def apply_bitmask(x: torch.Tensor, bitmask: torch.Tensor) -> torch.Tensor:
    """Tokens whose bit is 0 in `bitmask` [B, ceil(vocab/32)] (int32, llguidance's layout) go to -inf."""
    shifts = torch.arange(32, device=x.device, dtype=torch.int32)
    bits = ((bitmask.to(x.device, non_blocking=True).unsqueeze(-1) >> shifts) & 1).flatten(1)[:, : x.shape[1]]
    return x.masked_fill(bits == 0, float("-inf"))


def _to_device(rows: list[list[float]], dev: torch.device) -> torch.Tensor:
    host = torch.tensor(rows, dtype=torch.float64)
    if dev.type == "cuda":
        return host.pin_memory().to(dev, non_blocking=True)
    return host.to(dev)


def sample_rows(
    logits: torch.Tensor,
    params: Sequence[SamplingParams],
    generators: Sequence[torch.Generator | None],
    *,
    counts: torch.Tensor | None = None,
    prompt_seen: torch.Tensor | None = None,
    bitmask: torch.Tensor | None = None,
) -> Sampled:
    """Next tokens for logits [B, vocab], row i with params[i] and generators[i] (None: the default
    generator). `counts` [B, vocab] (tokens each row generated) and `prompt_seen` [B, vocab] feed the
    penalties; `bitmask` [B, ceil(vocab/32)] int32 restricts rows to their grammar's tokens."""
    n, vocab = logits.shape
    dev = logits.device
    want_lp = any(p.logprobs is not None for p in params)
    raw = logits
    x = logits
    biased = [i for i, p in enumerate(params) if p.logit_bias]
    penalised = counts is not None and any(has_penalty(p) for p in params)
    if biased or bitmask is not None or penalised:
        x = logits.float()
    if biased:
        # every bias entry in one host->device copy: (row, token, value) columns
        entries = [(i, t, v) for i in biased for t, v in params[i].logit_bias.items() if 0 <= t < vocab]
        if entries:
            table = _to_device([list(c) for c in zip(*entries, strict=True)], dev)
            x = x.index_put((table[0].long(), table[1].long()), table[2].float(), accumulate=True)
    if bitmask is not None:
        x = apply_bitmask(x, bitmask)
    if penalised:
        pen = _to_device([[p.presence_penalty for p in params], [p.frequency_penalty for p in params],
                          [p.repetition_penalty for p in params]], dev).float()
        produced = counts > 0
        if any(p.repetition_penalty != 1.0 for p in params):
            rp = pen[2, :, None]
            # one factor per entry: 1/rp on a seen positive logit, rp on a seen negative one, 1 elsewhere
            factor = torch.where(x > 0, 1.0 / rp, rp)
            x = x * torch.where(produced | prompt_seen, factor, 1.0)
        x = x - (pen[1, :, None] * counts + pen[0, :, None] * produced)
    tokens = _draw(x, params, generators)
    if not want_lp:
        return Sampled(tokens)
    lp = torch.log_softmax(raw.float(), -1)
    chosen = lp.gather(1, tokens[:, None])[:, 0]
    k = max(p.logprobs or 0 for p in params)
    if k == 0:
        return Sampled(tokens, chosen)
    top = lp.topk(min(k, vocab), -1)
    return Sampled(tokens, chosen, top.indices, top.values)


def _draw(
    logits: torch.Tensor, params: Sequence[SamplingParams], generators: Sequence[torch.Generator | None]
) -> torch.Tensor:
    greedy_rows = [is_greedy(p) for p in params]
    greedy = logits.argmax(-1)
    if all(greedy_rows):
        return greedy
    n, vocab = logits.shape
    dev = logits.device
    # every per-row parameter in one host->device copy: temperature, top_k, top_p, greedy, min_p
    table = [
        [1.0 if g else p.temperature for p, g in zip(params, greedy_rows, strict=True)],
        [float(p.top_k) if 0 < p.top_k < vocab else float(vocab) for p in params],
        [p.top_p if p.top_p < 1.0 else 2.0 for p in params],  # 2.0: no nucleus cut (rounding-proof)
        [float(g) for g in greedy_rows],
        [p.min_p for p in params],
    ]
    rowp = _to_device(table, dev)
    temp, top_k, top_p, greedy_mask = rowp[0, :, None], rowp[1].long(), rowp[2, :, None], rowp[3] > 0
    # shift before scaling: a tiny temperature (1e-300 is a valid request) would overflow raw logits to inf,
    # and softmax over inf is nan; shifted, the best token sits at 0 and the rest go to -inf at worst
    x = logits.float()
    x = (x - x.max(-1, keepdim=True).values) / temp.float()
    if kmax := max((p.top_k for p in params if 0 < p.top_k < vocab), default=0):
        # the k-th best value per row from one top-k of the largest k (a full sort costs ~10x more)
        best = x.topk(kmax, -1).values
        kth = best.gather(1, (top_k.clamp(max=kmax) - 1)[:, None])
        kth = torch.where(top_k[:, None] < vocab, kth, torch.full_like(kth, float("-inf")))  # no top-k: no cut
        x = x.masked_fill(x < kth, float("-inf"))
    probs = torch.softmax(x, dim=-1)
    if any(p.top_p < 1.0 for p in params):
        sorted_probs, order = probs.sort(dim=-1, descending=True, stable=True)
        # keep the smallest prefix whose mass reaches top_p (the token crossing it included)
        drop = sorted_probs.cumsum(-1) - sorted_probs >= top_p.float()
        drop[:, 0].fill_(False)  # the best token always stays (a top_p below float32's range would drop it too)
        probs = torch.zeros_like(probs).scatter_(1, order, sorted_probs.masked_fill(drop, 0.0))
    if any(p.min_p > 0.0 for p in params):
        # min-p: drop tokens less likely than min_p times the best one (the best always stays)
        floor = probs.max(-1, keepdim=True).values * rowp[4, :, None].float()
        probs = probs.masked_fill(probs < floor, 0.0)
    q = torch.empty_like(probs)
    seeded = [i for i, (g, gen) in enumerate(zip(greedy_rows, generators, strict=True)) if not g and gen is not None]
    if len(seeded) < n:
        q.exponential_()
    for i in seeded:
        gen = generators[i]
        if gen.device == q.device or (gen.device.type == q.device.type == "cpu"):
            q[i].exponential_(generator=gen)
        else:  # a generator on another device (a caller's CPU generator for GPU logits): draw there, copy
            q[i].copy_(torch.empty(vocab, device=gen.device).exponential_(generator=gen))
    # q can be 0 in float32: 0/0 would be nan, which argmax takes as the largest value
    drawn = (probs / q.clamp_(min=TINY)).argmax(-1)
    if not any(greedy_rows):
        return drawn
    return torch.where(greedy_mask, greedy, drawn)


def sample_batch(
    logits: torch.Tensor, params: Sequence[SamplingParams], generators: Sequence[torch.Generator | None]
) -> torch.Tensor:
    """Next tokens [B] (long, on the logits' device) for logits [B, vocab], row i with params[i] and
    generators[i] (None: the default generator)."""
    return sample_rows(logits, params, generators).tokens


def sample(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> int:
    """Pick the next token from one row of logits [vocab] (reads the token back: one sync)."""
    if is_greedy(params) and not params.logit_bias:
        return int(torch.argmax(logits))
    return int(sample_batch(logits[None], [params], [generator])[0])
