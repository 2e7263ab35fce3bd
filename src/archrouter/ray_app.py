"""The Ray Serve application: one deployment per backend in the catalogue, one routing ingress.

    serve run config/serve.yaml        # or: serve deploy config/serve.yaml on a running cluster
    archrouter serve                   # the same, from the CLI (make serve)

`config/serve.yaml` names `archrouter.ray_app:build` with its arguments (policy file, per-backend
deployment options); the ingress runs the same FastAPI app as embedded mode and reaches the
backends through `DeploymentHandle`s, streaming tokens with `handle.options(stream=True)`.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from ray.serve import Application
from ray.serve.handle import DeploymentHandle

from archrouter.backends.devices import gpu_share
from archrouter.backends.protocol import BackendInfo, GenerationChunk, GenerationRequest
from archrouter.policies.loader import load_policy


class DeploymentOptions(BaseModel):
    """The subset of Serve's deployment options a backend or the ingress may set."""

    model_config = ConfigDict(extra="forbid")

    num_replicas: int | str | None = None  # an int, or "auto"
    autoscaling_config: dict[str, Any] | None = None
    ray_actor_options: dict[str, Any] = Field(default_factory=lambda: {"num_cpus": 0.25})
    max_ongoing_requests: int | None = None
    max_queued_requests: int | None = None  # past it the handle refuses at once: BackendOverloaded, a fallback
    health_check_period_s: float | None = None
    health_check_timeout_s: float | None = None
    graceful_shutdown_timeout_s: float | None = None

    def as_kwargs(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class ServeArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    policy: str = "config/policy.yaml"
    # auto: each backend replica asks Ray for a GPU share (one GPU each when the cluster has enough, else an
    # equal fraction) unless its ray_actor_options name num_gpus, and runs on CUDA where it got one
    device: str = "auto"
    settings: dict[str, Any] = Field(default_factory=dict)  # router Settings fields (redis_url, rpm, ...)
    ingress: DeploymentOptions = Field(default_factory=DeploymentOptions)
    backend_defaults: DeploymentOptions = Field(default_factory=DeploymentOptions)
    backends: dict[str, DeploymentOptions] = Field(default_factory=dict)
    # recurrent-state affinity (router/ray_affinity.py): "on" steers a conversation's turns to the replica
    # holding its state; "measure" only counts where they land; "off" leaves Serve's default router
    state_affinity: Literal["on", "measure", "off"] = "on"
    affinity_prefix: str = "archrouter:affinity"  # Redis keys of the affinity table and its counters


def _resolve(path: str, policy_file: Path | None = None) -> str:
    """An absolute path, resolved where `serve run` / `archrouter serve` runs (replicas may run elsewhere):
    against the working directory, then (as the policy loader finds its classifier) the policy's folder and up."""
    p = Path(path)
    if p.is_absolute():
        return str(p)
    bases = [Path.cwd(), *(policy_file.parents if policy_file else [])]
    return str(next((b / p for b in bases if (b / p).exists()), Path.cwd() / p).resolve())


def _replica_name() -> str:
    try:
        return serve.get_replica_context().replica_id.unique_id
    except Exception:  # outside a replica (a unit test building the class by hand)
        return f"pid{os.getpid()}"


@serve.deployment
class BackendServer:
    """Hosts one backend's engine; the ingress calls it through a handle."""

    def __init__(self, name: str, spec: dict[str, Any], device: str, redis_url: str | None = None):
        from archrouter.router.embedded import embedded_factory

        self.client = embedded_factory(device, redis_url=redis_url)(name, _Spec(spec))

    def info(self) -> BackendInfo:
        return self.client.info

    async def ready(self) -> bool:
        return await self.client.ready()

    def stats(self) -> dict[str, float]:
        stats = getattr(self.client, "stats", None)
        return stats() if callable(stats) else {}

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        async for chunk in self.client.generate(request):
            yield chunk

    async def check_health(self) -> None:
        # Serve calls this every health_check_period_s and restarts a replica whose check raises
        if not await self.client.ready():
            raise RuntimeError(f"engine of {self.client.info.name!r} is not running")

    async def __del__(self) -> None:  # Serve awaits this when it stops the replica
        await self.client.close()


@serve.deployment
@serve.ingress()
class Ingress:
    """The router: policy, auth, limits, dispatch — the FastAPI app of embedded mode."""

    def __init__(self, settings: dict[str, Any], backends: dict[str, DeploymentHandle]):
        self.settings, self.handles = settings, backends

    def __serve_build_asgi_app__(self):
        from archrouter.router.app import create_app
        from archrouter.router.ray_client import ray_factory
        from archrouter.router.settings import Settings

        settings = Settings(**{**self.settings, "replica": _replica_name()})
        return create_app(settings, factory=ray_factory(self.handles,
                                                        assign_timeout_s=settings.backend_assign_timeout_s))


class _Spec:
    """Attribute access over a catalogue entry dict, as the embedded factory expects."""

    def __init__(self, d: dict[str, Any]):
        self.__dict__.update(d)


def _cluster_gpus() -> float:
    """GPUs of the Ray cluster this deploy talks to (this machine's when Ray is not up yet)."""
    import ray

    if ray.is_initialized():
        return float(ray.cluster_resources().get("GPU", 0))
    import torch

    return float(torch.cuda.device_count())


def _affinity_config(redis_url: str | None, enabled: bool, prefix: str):
    from ray.serve.config import RequestRouterConfig

    return RequestRouterConfig(request_router_class="archrouter.router.ray_affinity:StateAffinityRouter",
                               request_router_kwargs={"redis_url": redis_url, "enabled": enabled, "prefix": prefix})


def build(args: dict[str, Any]) -> Application:
    """Serve's application builder (`import_path: archrouter.ray_app:build` in config/serve.yaml)."""
    from archrouter.router.auth import KeyStore
    from archrouter.router.settings import Settings

    cfg = ServeArgs.model_validate(args)
    policy_file = _resolve(cfg.policy)
    policy = load_policy(policy_file)  # an invalid policy fails the deploy, before any replica starts
    unknown = set(cfg.backends) - set(policy.backends)
    if unknown:
        raise ValueError(f"config/serve.yaml names backends not in {cfg.policy}: {', '.join(sorted(unknown))}")
    # resolved here, where `serve run` / `serve deploy` runs, so REDIS_URL and ARCHROUTER_* apply to every replica
    # several ingress replicas: with Redis they share one policy version (settings.policy_sync: false opts out)
    settings = Settings(**{"policy_sync": True, **cfg.settings, "policy": policy_file})
    KeyStore.from_config(settings.keys_file, settings.api_keys, settings.admin_key)  # bad keys fail the deploy here
    if settings.redis_url and settings.policy_sync:  # a deploy makes its policy file the version replicas serve
        from archrouter.router.policy_sync import publish_now

        publish_now(settings.redis_url, Path(policy_file).read_text(encoding="utf-8"), policy.id,
                    channel=settings.policy_channel, key=settings.policy_key)
    handles = {}
    share = gpu_share(_cluster_gpus(), len(policy.backends)) if cfg.device == "auto" else 0.0
    for name, spec in policy.backends.items():
        opts = cfg.backend_defaults.as_kwargs()
        if name in cfg.backends:  # what a backend sets wins over the defaults, field by field
            opts.update(cfg.backends[name].model_dump(exclude_unset=True, exclude_none=True))
        if share and "num_gpus" not in opts.get("ray_actor_options", {}):
            opts["ray_actor_options"] = {**opts.get("ray_actor_options", {}), "num_gpus": share}
        if cfg.state_affinity != "off":
            opts["request_router_config"] = _affinity_config(settings.redis_url, cfg.state_affinity == "on",
                                                             cfg.affinity_prefix)
        handles[name] = BackendServer.options(name=f"backend-{name}", **opts).bind(
            name, {**spec.model_dump(mode="json"), "checkpoint": _resolve(spec.checkpoint, Path(policy_file))},
            cfg.device, settings.redis_url
        )
    fields = settings.model_dump(exclude={"host", "port"})
    return Ingress.options(name="router", **cfg.ingress.as_kwargs()).bind(fields, handles)
