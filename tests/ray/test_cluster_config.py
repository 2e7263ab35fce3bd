"""The cluster Serve configs: valid for Serve, one deployment per family of the zoo's catalogue, the GPU
shares they ask for, and the app graph ray_app.build makes from them (built here on CPU, no Ray instance)."""

from __future__ import annotations

import sys

import pytest
import yaml

from archrouter.policies.loader import load_policy
from tests.conftest import ROOT

ray = pytest.importorskip("ray")
from ray.serve.schema import ServeDeploySchema  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_cluster import serve_doc  # noqa: E402

ZOO = load_policy(ROOT / "config/policy.yaml")
CONFIGS = {"config/serve.multi-gpu.yaml": 1, "config/serve.one-gpu.yaml": 0.25}  # GPUs per family


def deployments(app) -> dict[str, dict]:
    """name -> (num_replicas, ray_actor_options) of the ingress and every backend it holds a handle to."""
    ingress = app._bound_deployment
    out = {ingress.name: {"replicas": ingress.num_replicas, **ingress.ray_actor_options}}
    for bound in ingress.init_args[1].values():
        d = bound._bound_deployment
        out[d.name] = {"replicas": d.num_replicas, **d.ray_actor_options}
    return out


@pytest.mark.parametrize("path,gpus", CONFIGS.items())
def test_config_is_valid_and_gives_each_family_its_gpu_share(path, gpus):
    from archrouter import ray_app
    doc = yaml.safe_load((ROOT / path).read_text())
    ServeDeploySchema.model_validate(doc)  # what `serve deploy` checks
    [app_spec] = doc["applications"]
    assert app_spec["import_path"] == "archrouter.ray_app:build"
    args = ray_app.ServeArgs.model_validate(app_spec["args"])
    assert (ROOT / args.policy).resolve() == (ROOT / "config/policy.yaml").resolve()
    assert set(args.backends) == set(ZOO.backends) == {"transformer", "mamba", "rwkv", "xlstm"}
    assert {ZOO.backends[n].family for n in ZOO.backends} == {"transformer", "mamba", "rwkv", "xlstm"}
    for env in app_spec["runtime_env"]["env_vars"]:
        assert env.startswith("ARCHROUTER_ENGINE_")

    got = deployments(ray_app.build(app_spec["args"]))
    assert set(got) == {"router", *(f"backend-{n}" for n in ZOO.backends)}
    assert got["router"]["num_gpus"] == 0
    for name in ZOO.backends:
        assert got[f"backend-{name}"]["num_gpus"] == gpus and got[f"backend-{name}"]["replicas"] == 1
    total = sum(d.get("num_gpus", 0) * d["replicas"] for d in got.values())
    assert total == (4 if gpus == 1 else 1)  # four whole GPUs, or exactly one shared


@pytest.mark.parametrize("path", CONFIGS)
def test_cpu_override_drops_gpus_and_keeps_the_rest(path, tmp_path):
    from archrouter import ray_app
    doc = serve_doc(ROOT / path, ROOT / "config/policy.yaml", "cpu", 8123)
    ServeDeploySchema.model_validate(doc)
    args = doc["applications"][0]["args"]
    assert args["device"] == "cpu" and doc["http_options"]["port"] == 8123
    got = deployments(ray_app.build(args))
    assert all("num_gpus" not in d for d in got.values())
    assert all(d["num_cpus"] > 0 for d in got.values())


def test_default_config_is_auto_and_asks_for_gpus_only_where_there_are_some():
    import torch

    from archrouter import ray_app
    from archrouter.backends.devices import gpu_share, resolve_device

    doc = yaml.safe_load((ROOT / "config/serve.yaml").read_text())
    ServeDeploySchema.model_validate(doc)
    args = doc["applications"][0]["args"]
    assert args["device"] == "auto" and ray_app.ServeArgs().device == "auto"
    got = deployments(ray_app.build(args))
    gpus = torch.cuda.device_count()  # no Ray instance here: the deploying machine's GPUs
    want = gpu_share(gpus, len(ZOO.backends))
    for name in ZOO.backends:
        assert got[f"backend-{name}"].get("num_gpus", 0) == want
    assert got["router"].get("num_gpus", 0) == 0
    assert resolve_device("auto") == ("cuda" if gpus else "cpu") and resolve_device("cpu") == "cpu"
    # four backends: one GPU each from four GPUs up, else equal shares of the whole GPUs
    assert [gpu_share(g, 4) for g in (0, 1, 2, 3, 4, 8)] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
