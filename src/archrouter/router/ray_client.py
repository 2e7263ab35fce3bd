"""`BackendClient` over a Ray Serve deployment handle: the router does not know it is remote.

Errors come back as the router expects them from an in-process engine: a `BackendError` raised in
the replica (ContextLengthExceeded, BackendOverloaded, ...) is re-raised here as that very type and
message (Ray delivers it wrapped in a RayTaskError whose `cause` is the original); the handle's own
refusals and a dead or missing replica become BackendOverloaded / BackendError, so dispatch walks
the decision's fallbacks.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from ray.exceptions import RayError, RayTaskError
from ray.serve.exceptions import BackPressureError, RayServeException
from ray.serve.handle import DeploymentHandle

from archrouter.backends.protocol import (
    BackendClient,
    BackendError,
    BackendInfo,
    BackendOverloaded,
    GenerationChunk,
    GenerationRequest,
)
from archrouter.router.pool import ClientFactory


def backend_error(exc: BaseException, backend: str) -> BaseException:
    """The exception the router should see for one raised by a handle call."""
    if isinstance(exc, RayTaskError) and isinstance(exc.cause, BackendError):
        return exc.cause  # the replica's own exception, unwrapped: same type, same message
    if isinstance(exc, BackPressureError):
        return BackendOverloaded(f"deployment for {backend!r} is at capacity: {exc}")
    if isinstance(exc, RayTaskError):
        return BackendError(f"backend {backend!r} failed: {type(exc.cause).__name__}: {exc.cause}")
    if isinstance(exc, RayError | RayServeException):  # replica died, deployment down or deleted
        return BackendError(f"deployment for {backend!r} is unavailable: {type(exc).__name__}")
    return exc


class RayBackendClient:
    def __init__(self, handle: DeploymentHandle, info: BackendInfo, *, assign_timeout_s: float = 5.0):
        self.handle = handle
        self.info = info
        self.assign_timeout_s = assign_timeout_s
        self._stream = handle.options(stream=True)

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        response = self._stream.generate.remote(request)
        finished = False
        # the stream is over when every choice (prompts x n) has sent its last chunk
        left = (len(request.prompt) if isinstance(request.prompt, list) else 1) * max(1, request.sampling.n)
        try:
            await self._assigned(response)
            async for chunk in response:
                left -= chunk.finish_reason is not None
                finished = left <= 0
                yield chunk
        except (RayError, RayServeException) as exc:
            raise backend_error(exc, self.info.name) from exc
        finally:
            if not finished:  # the client went away or the stream failed: stop the replica generating
                response.cancel()

    async def _assigned(self, response) -> None:
        """Wait for a replica to take the request. A handle queues requests while every replica is busy
        or none is alive (one was killed, Serve is starting another): past `assign_timeout_s` the
        request goes to a fallback instead of waiting for the restart."""
        fetch = getattr(response, "_fetch_future_result_async", None)  # Serve's own wait for assignment
        if fetch is None:
            return
        try:
            await asyncio.wait_for(fetch(), self.assign_timeout_s)
        except TimeoutError:
            raise BackendOverloaded(f"no replica of {self.info.name!r} took the request within "
                                    f"{self.assign_timeout_s:g}s (deployment down or at capacity)") from None

    async def ready(self) -> bool:
        try:
            return bool(await self.handle.ready.remote())
        except (RayError, RayServeException):
            return False

    async def close(self) -> None:
        pass


def ray_factory(handles: dict[str, DeploymentHandle], *, assign_timeout_s: float = 5.0) -> ClientFactory:
    def build(name: str, spec) -> BackendClient:
        handle = handles.get(name)
        if handle is None:
            raise BackendError(f"backend {name!r} has no deployment; add it to the catalogue and redeploy "
                               "(`serve deploy config/serve.yaml`)")
        info = handle.info.remote().result(timeout_s=120)
        return RayBackendClient(handle, info, assign_timeout_s=assign_timeout_s)

    return build
