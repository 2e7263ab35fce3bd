"""The Ray Serve application: one deployment per backend in the catalogue, one routing ingress.

    serve run config/serve.yaml        # or: serve deploy config/serve.yaml on a running cluster

`config/serve.yaml` names `ray_app:build` with its arguments (policy file, per-backend
deployment options); the ingress runs the same FastAPI app as embedded mode and reaches the
backends through `DeploymentHandle`s, streaming tokens with `handle.options(stream=True)`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from ray.serve import Application
from ray.serve.handle import DeploymentHandle

from backends.protocol import BackendInfo, GenerationChunk, GenerationRequest
from policies.loader import load_policy


class DeploymentOptions(BaseModel):
    """The subset of Serve's deployment options a backend or the ingress may set."""

    model_config = ConfigDict(extra="forbid")

    num_replicas: int | str | None = None  # an int, or "auto"
    autoscaling_config: dict[str, Any] | None = None
    ray_actor_options: dict[str, Any] = Field(default_factory=lambda: {"num_cpus": 0.25})
    max_ongoing_requests: int | None = None
    health_check_period_s: float | None = None
    health_check_timeout_s: float | None = None
    graceful_shutdown_timeout_s: float | None = None

    def as_kwargs(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class ServeArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    policy: str = "config/policy.yaml"
    device: str = "cpu"
    settings: dict[str, Any] = Field(default_factory=dict)  # router Settings fields (redis_url, rpm, ...)
    ingress: DeploymentOptions = Field(default_factory=DeploymentOptions)
    backend_defaults: DeploymentOptions = Field(default_factory=DeploymentOptions)
    backends: dict[str, DeploymentOptions] = Field(default_factory=dict)


@serve.deployment
class BackendServer:
    """Hosts one backend's engine; the ingress calls it through a handle."""

    def __init__(self, name: str, spec: dict[str, Any], device: str):
        from router.embedded import embedded_factory

        self.client = embedded_factory(device)(name, _Spec(spec))

    def info(self) -> BackendInfo:
        return self.client.info

    async def ready(self) -> bool:
        return await self.client.ready()

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        async for chunk in self.client.generate(request):
            yield chunk

    async def check_health(self) -> None:
        # Serve restarts a replica whose health check raises
        if not await self.client.ready():
            raise RuntimeError(f"engine of {self.client.info.name!r} is not ready")


@serve.deployment
@serve.ingress()
class Ingress:
    """The router: policy, auth, limits, dispatch — the FastAPI app of embedded mode."""

    def __init__(self, settings: dict[str, Any], backends: dict[str, DeploymentHandle]):
        self.settings, self.handles = settings, backends

    def __serve_build_asgi_app__(self):
        from router.app import create_app
        from router.ray_client import ray_factory
        from router.settings import Settings

        return create_app(Settings(**self.settings), factory=ray_factory(self.handles))


class _Spec:
    """Attribute access over a catalogue entry dict, as the embedded factory expects."""

    def __init__(self, d: dict[str, Any]):
        self.__dict__.update(d)


def build(args: dict[str, Any]) -> Application:
    """Serve's application builder (`import_path: ray_app:build` in config/serve.yaml)."""
    cfg = ServeArgs.model_validate(args)
    policy = load_policy(cfg.policy)
    unknown = set(cfg.backends) - set(policy.backends)
    if unknown:
        raise ValueError(f"config/serve.yaml names backends not in {cfg.policy}: {', '.join(sorted(unknown))}")
    handles = {}
    for name, spec in policy.backends.items():
        opts = cfg.backends.get(name, cfg.backend_defaults).as_kwargs()
        handles[name] = BackendServer.options(name=f"backend-{name}", **opts).bind(
            name, spec.model_dump(mode="json"), cfg.device
        )
    settings = {**cfg.settings, "policy": cfg.policy}
    return Ingress.options(name="router", **cfg.ingress.as_kwargs()).bind(settings, handles)
