"""Per-request sampling: temperature, top-k, top-p, seeded."""

from __future__ import annotations

import torch

from backends.protocol import SamplingParams


def sample(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> int:
    """Pick the next token from one row of logits [vocab]."""
    # a temperature that is 0 in float32 means greedy too (dividing by it would make 0/0 = nan)
    if params.temperature < torch.finfo(torch.float32).tiny:
        return int(torch.argmax(logits))
    # shift before scaling: a tiny temperature (1e-300 is a valid request) would overflow raw logits to inf,
    # and softmax over inf is nan; shifted, the best token sits at 0 and the rest go to -inf at worst
    logits = logits.float()
    logits = (logits - logits.max()) / params.temperature
    if params.top_k > 0 and params.top_k < logits.numel():
        kth = torch.topk(logits, params.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if params.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        # keep the smallest prefix whose mass reaches top_p (the token crossing it included)
        drop = sorted_probs.cumsum(0) - sorted_probs >= params.top_p
        drop[0] = False  # the best token always stays (a top_p below float32's range would drop it too)
        sorted_probs[drop] = 0.0
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
    return int(torch.multinomial(probs, 1, generator=generator))
