"""Send a request to the decided backend, walking the decision's fallbacks on failure.

A backend may fail before its first chunk (overloaded, context too long, down); then the next
fallback is tried. Once a stream has started, a failure ends it: switching backends mid-answer
would duplicate or garble tokens.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import structlog

from backends.protocol import BackendError, ContextLengthExceeded, GenerationChunk, GenerationRequest
from router.errors import APIError
from router.pool import BackendPool

log = structlog.get_logger("archrouter.dispatch")


@dataclass
class Opened:
    backend: str
    first: GenerationChunk
    rest: AsyncIterator[GenerationChunk]
    failed: list[tuple[str, str]] = field(default_factory=list)  # (backend, error) tried before it


async def open_stream(pool: BackendPool, candidates: list[str], request: GenerationRequest) -> Opened:
    failed: list[tuple[str, str]] = []
    context_errors: list[ContextLengthExceeded] = []
    for name in candidates:
        client = pool.get(name)
        if client is None:
            failed.append((name, "not loaded"))
            continue
        stream = client.generate(request)
        try:
            first = await anext(stream)
        except ContextLengthExceeded as exc:
            context_errors.append(exc)
            failed.append((name, str(exc)))
            continue
        except (BackendError, RuntimeError, OSError) as exc:
            log.warning("backend_failed", backend=name, error=str(exc))
            failed.append((name, f"{type(exc).__name__}: {exc}"))
            continue
        return Opened(name, first, stream, failed)
    if context_errors and len(context_errors) == len(failed):
        raise APIError(400, str(context_errors[0]), param="messages", code="context_length_exceeded")
    raise APIError(
        503,
        "no backend could serve the request: " + "; ".join(f"{n}: {e}" for n, e in failed),
        type="server_error",
        code="backend_unavailable",
    )
