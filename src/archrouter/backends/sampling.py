"""Sampling: temperature, top-k, top-p, seeded; a whole batch in one call, each row with its own parameters.

`sample_batch` is what the engine runs once per step over every row that needs a token; `sample` is the
same function on one row (the per-request generator uses it), so a seeded request draws the same tokens
alone, in the generator, or inside any batch.

A draw is an exponential race: token = argmax(p / q) with q ~ Exp(1) per vocabulary entry, which picks
token i with probability p_i (the Gumbel-max trick in another form, as vLLM samples). Each seeded row
draws its q from its own generator, vocabulary-wide, so what a row draws never depends on the rows beside
it; unseeded rows share one draw from the default generator. Nothing here reads a device tensor back.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from archrouter.backends.protocol import SamplingParams

# a temperature that is 0 in float32 means greedy too (dividing by it would make 0/0 = nan)
TINY = torch.finfo(torch.float32).tiny


def is_greedy(params: SamplingParams) -> bool:
    return params.temperature < TINY


def sample_batch(
    logits: torch.Tensor, params: Sequence[SamplingParams], generators: Sequence[torch.Generator | None]
) -> torch.Tensor:
    """Next tokens [B] (long, on the logits' device) for logits [B, vocab], row i with params[i] and
    generators[i] (None: the default generator)."""
    greedy_rows = [is_greedy(p) for p in params]
    greedy = logits.argmax(-1)
    if all(greedy_rows):
        return greedy
    n, vocab = logits.shape
    dev = logits.device
    # every per-row parameter in one host->device copy: temperature, top_k, top_p
    table = [
        [1.0 if g else p.temperature for p, g in zip(params, greedy_rows, strict=True)],
        [float(p.top_k) if 0 < p.top_k < vocab else float(vocab) for p in params],
        [p.top_p if p.top_p < 1.0 else 2.0 for p in params],  # 2.0: no nucleus cut (rounding-proof)
        [float(g) for g in greedy_rows],
    ]
    host = torch.tensor(table, dtype=torch.float64)
    if dev.type == "cuda":
        host = host.pin_memory()
    rowp = host.to(dev, non_blocking=True)
    temp, top_k, top_p, greedy_mask = rowp[0, :, None], rowp[1].long(), rowp[2, :, None], rowp[3] > 0
    # shift before scaling: a tiny temperature (1e-300 is a valid request) would overflow raw logits to inf,
    # and softmax over inf is nan; shifted, the best token sits at 0 and the rest go to -inf at worst
    x = logits.float()
    x = (x - x.max(-1, keepdim=True).values) / temp.float()
    if any(0 < p.top_k < vocab for p in params):
        ordered = x.sort(-1, descending=True).values
        kth = ordered.gather(1, (top_k - 1)[:, None])  # rows without top-k: the smallest value, cuts nothing
        x = x.masked_fill(x < kth, float("-inf"))
    probs = torch.softmax(x, dim=-1)
    if any(p.top_p < 1.0 for p in params):
        sorted_probs, order = probs.sort(dim=-1, descending=True, stable=True)
        # keep the smallest prefix whose mass reaches top_p (the token crossing it included)
        drop = sorted_probs.cumsum(-1) - sorted_probs >= top_p.float()
        drop[:, 0].fill_(False)  # the best token always stays (a top_p below float32's range would drop it too)
        probs = torch.zeros_like(probs).scatter_(1, order, sorted_probs.masked_fill(drop, 0.0))
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


def sample(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> int:
    """Pick the next token from one row of logits [vocab] (reads the token back: one sync)."""
    if is_greedy(params):
        return int(torch.argmax(logits))
    return int(sample_batch(logits[None], [params], [generator])[0])
