"""`BackendClient` over a Ray Serve deployment handle: the router does not know it is remote."""

from __future__ import annotations

from collections.abc import AsyncIterator

from ray.exceptions import RayActorError, RayError
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle

from backends.protocol import (
    BackendClient,
    BackendError,
    BackendInfo,
    BackendOverloaded,
    GenerationChunk,
    GenerationRequest,
)
from router.pool import ClientFactory


class RayBackendClient:
    def __init__(self, handle: DeploymentHandle, info: BackendInfo):
        self.handle = handle
        self.info = info
        self._stream = handle.options(stream=True)

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        try:
            async for chunk in self._stream.generate.remote(request):
                yield chunk
        except BackendError:  # raised in the replica; Ray re-raises it as a subclass of the original
            raise
        except BackPressureError as exc:
            raise BackendOverloaded(str(exc)) from exc
        except (RayActorError, RayError) as exc:
            raise BackendError(f"deployment for {self.info.name!r} failed: {type(exc).__name__}") from exc

    async def ready(self) -> bool:
        try:
            return bool(await self.handle.ready.remote())
        except RayError:
            return False

    async def close(self) -> None:
        pass


def ray_factory(handles: dict[str, DeploymentHandle]) -> ClientFactory:
    def build(name: str, spec) -> BackendClient:
        handle = handles.get(name)
        if handle is None:
            raise BackendError(f"backend {name!r} has no deployment; add it and redeploy (`serve deploy`)")
        info = handle.info.remote().result(timeout_s=120)
        return RayBackendClient(handle, info)

    return build
