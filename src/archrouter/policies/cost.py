"""The cost model: estimated latency and price of one request on one backend.

Plain float arithmetic: it runs for every backend on every request, so it stays a handful of
multiplications (no numpy, whose per-call overhead would dominate at this size).
"""

from __future__ import annotations

from collections.abc import Iterable

from archrouter.policies.schema import BackendSpec, CostModel
from archrouter.policies.types import Estimate

MS_PER_HOUR = 3_600_000.0


def prefill_ms(cost: CostModel, n: int) -> float:
    p = cost.prefill_ms
    return p.base + p.per_token * n + p.per_token_sq * n * n


def decode_ms(cost: CostModel, context: float) -> float:
    d = cost.decode_ms
    return d.base + d.per_context * context


def estimate(spec: BackendSpec | CostModel, prompt_tokens: int, max_tokens: int) -> Estimate:
    """Latency (ms) and price of prefilling `prompt_tokens` and decoding `max_tokens`.

    The m decode steps run at contexts n .. n+m-1. Decode time is linear in the context, so their
    sum is exactly m * decode(n + (m-1)/2): one multiplication instead of a loop.
    """
    cost = spec.cost if isinstance(spec, BackendSpec) else spec
    n, m = max(prompt_tokens, 0), max(max_tokens, 0)
    latency = prefill_ms(cost, n) + m * decode_ms(cost, n + (m - 1) / 2)
    price = (
        n * cost.price_per_1m_input / 1e6
        + m * cost.price_per_1m_output / 1e6
        + latency / MS_PER_HOUR * cost.price_per_gpu_hour
    )
    return Estimate(latency_ms=latency, cost=price)


def estimate_all(
    catalogue: Iterable[BackendSpec], prompt_tokens: int, max_tokens: int
) -> dict[str, Estimate]:
    return {b.name: estimate(b, prompt_tokens, max_tokens) for b in catalogue}
