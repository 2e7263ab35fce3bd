"""Send a request to the decided backend, walking the decision's fallbacks on failure.

A backend may fail before its first chunk (overloaded, context too long, down); then the next
fallback is tried, and repeated failures put the backend in cooldown. Once a stream has
started, a failure ends it: switching backends mid-answer would duplicate or garble tokens.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import structlog

from archrouter.backends.protocol import (
    BackendError,
    BackendOverloaded,
    ContextLengthExceeded,
    GenerationChunk,
    GenerationRequest,
    InvalidRequest,
)
from archrouter.router.cooldown import Cooldowns
from archrouter.router.errors import APIError
from archrouter.router.pool import BackendPool

log = structlog.get_logger("archrouter.dispatch")


@dataclass
class Opened:
    backend: str
    first: GenerationChunk
    rest: AsyncIterator[GenerationChunk]
    failed: list[tuple[str, str]] = field(default_factory=list)  # (backend, error) tried before it
    # backend -> why it was passed over: cooldown, overloaded, unhealthy, context_length, not_loaded
    reasons: dict[str, str] = field(default_factory=dict)


async def open_stream(
    pool: BackendPool,
    candidates: list[str],
    request: GenerationRequest,
    cooldowns: Cooldowns,
    *,
    first_token_timeout_s: float,
) -> Opened:
    failed: list[tuple[str, str]] = []
    reasons: dict[str, str] = {}
    context_errors: list[ContextLengthExceeded] = []
    overloaded = 0
    # backends in cooldown go last rather than nowhere: better a slow answer than none
    ordered = [c for c in candidates if not cooldowns.cooling(c)] + [c for c in candidates if cooldowns.cooling(c)]
    for name in ordered:
        client = pool.get(name)
        if client is None:
            failed.append((name, "not loaded"))
            reasons[name] = "not_loaded"
            continue
        stream = client.generate(request)
        try:
            first = await asyncio.wait_for(anext(stream), first_token_timeout_s)
        except InvalidRequest as exc:  # the request's fault, whichever backend: no fallback, no cooldown
            raise APIError(400, exc.message, param=exc.param, code="invalid_request") from None
        except ContextLengthExceeded as exc:  # not the backend's fault: no cooldown
            context_errors.append(exc)
            failed.append((name, str(exc)))
            reasons[name] = "context_length"
            continue
        except BackendOverloaded as exc:
            overloaded += 1
            failed.append((name, f"overloaded: {exc}"))
            reasons[name] = "overloaded"
            continue
        except (TimeoutError, BackendError, RuntimeError, OSError) as exc:
            await stream.aclose()
            log.warning("backend_failed", backend=name, error=repr(exc))
            failed.append((name, f"{type(exc).__name__}: {exc}"))
            reasons[name] = "unhealthy"
            if cooldowns.failed(name):
                log.warning("backend_cooldown", backend=name, seconds=cooldowns.cooldown_s)
            continue
        cooldowns.succeeded(name)
        # candidates ranked above this one but sitting out a cooldown were passed over too
        before = candidates[: candidates.index(name)]
        cooled = [(c, "cooling down after repeated failures") for c in before if c not in reasons]
        reasons.update((c, "cooldown") for c, _ in cooled)
        rank = {c: i for i, c in enumerate(candidates)}
        return Opened(name, first, stream, sorted(cooled + failed, key=lambda f: rank[f[0]]), reasons)
    if context_errors and len(context_errors) == len(failed):
        widest = max(context_errors, key=lambda e: e.limit)
        what = "messages" if request.messages is not None else "prompt"
        raise APIError(400, f"This request needs {widest.prompt_tokens} tokens ({what} plus max_tokens), but the "
                       f"largest context among the backends it may use is {widest.limit} tokens ({widest.backend!r}); "
                       f"shorten the {what} or lower max_tokens.", param=what, code="context_length_exceeded")
    if overloaded and overloaded == len(failed):
        raise APIError(429, "every candidate backend is at capacity; retry shortly", type="server_error",
                       code="backend_overloaded", headers={"retry-after": "1"})
    raise APIError(
        503,
        "no backend could serve the request: " + "; ".join(f"{n}: {e}" for n, e in failed),
        type="server_error",
        code="backend_unavailable",
    )
