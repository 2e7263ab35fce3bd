"""The Ray Serve application on a local Ray instance: two families, two ingress replicas, real Redis.

One Serve app for the whole module (Ray starts slowly on two cores). Tiny random checkpoints of
two families; the engines get a small batch (2 running, 2 waiting) so a burst of requests overflows
a backend and a killed replica has requests queued on it.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import time
import uuid
from pathlib import Path

import httpx
import openai
import pytest
import redis

from archrouter.backends.families import init_random
from tests.conftest import CLASSIFIER, REDIS_URL, ROOT
from tests.router.conftest import free_port

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")

ADMIN = "ar-testadmin-" + uuid.uuid4().hex
AUTH = {"authorization": f"Bearer {ADMIN}"}
LONG = "The quick brown fox jumps over the lazy dog. " * 20  # ~200 tokens: past the `long` rule's 100


def policy_text(models: Path, *, name: str, default: str = "transformer", extra: str = "") -> str:
    return f"""
name: {name}
classifier: {CLASSIFIER}
backends:
  - name: transformer
    family: transformer
    checkpoint: {models / "transformer"}
    context_length: 192
  - name: mamba
    family: mamba
    checkpoint: {models / "mamba"}
    context_length: 2048
rules:
{extra}
  - name: long
    when: {{prompt_tokens: {{gt: 100}}}}
    route: mamba
    fallbacks: [transformer]
default: {{route: {default}, fallbacks: [{"mamba" if default == "transformer" else "transformer"}]}}
"""


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    from archrouter import ray_app
    models = tmp_path_factory.mktemp("ray-models")
    init_random("transformer", "tiny", models / "transformer", seed=1)
    init_random("mamba", "tiny", models / "mamba", seed=2)
    policy = models / "policy.yaml"
    policy.write_text(policy_text(models, name="ray-a"))
    ns = f"archrouter:test:{uuid.uuid4().hex}"
    port = free_port()
    # the replicas import this checkout's code (src/), not whatever the environment has installed
    env = {"PYTHONPATH": f"{ROOT / 'src'}:{ROOT}", "ARCHROUTER_ENGINE_MAX_NUM_SEQS": "2",
           "ARCHROUTER_ENGINE_MAX_WAITING": "2"}
    ray.init(address="local", num_cpus=3, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": env})
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        args = {
            "policy": str(policy),
            "settings": {"redis_url": REDIS_URL, "policy_channel": f"{ns}:policy", "policy_key": f"{ns}:key",
                         "decision_stream": f"{ns}:decisions", "admin_key": ADMIN, "watch_policy": False,
                         "backend_assign_timeout_s": 2.0,
                         "log_format": "json"},
            "ingress": {"num_replicas": 2, "max_ongoing_requests": 64, "ray_actor_options": {"num_cpus": 0.1}},
            "backend_defaults": {"num_replicas": 1, "max_ongoing_requests": 16, "health_check_period_s": 1,
                                 "health_check_timeout_s": 10, "ray_actor_options": {"num_cpus": 0.2}},
        }
        serve.run(ray_app.build(args), name="archrouter", route_prefix="/")
        yield {"url": f"http://127.0.0.1:{port}", "models": models, "policy": policy, "stream": f"{ns}:decisions"}
    finally:
        serve.shutdown()
        ray.shutdown()
        redis.Redis.from_url(REDIS_URL).delete(f"{ns}:key", f"{ns}:decisions")


@pytest.fixture()
def client(app):
    return openai.OpenAI(base_url=app["url"] + "/v1", api_key=ADMIN, max_retries=0, timeout=60)


def test_deployments_healthy_one_per_backend(app):
    deployments = serve.status().applications["archrouter"].deployments
    assert set(deployments) == {"router", "backend-transformer", "backend-mamba"}
    assert {d.status.value for d in deployments.values()} == {"HEALTHY"}


@pytest.mark.parametrize("model,messages,backend,rule", [
    ("auto", [{"role": "user", "content": "hello there"}], "transformer", "default"),
    ("auto", [{"role": "user", "content": LONG}], "mamba", "long"),
    ("mamba", [{"role": "user", "content": "hello there"}], "mamba", "pinned"),
])
def test_openai_client_stream_and_not(client, model, messages, backend, rule):
    raw = client.chat.completions.with_raw_response.create(model=model, messages=messages, max_tokens=6,
                                                           temperature=0)
    resp = raw.parse()
    assert raw.headers["x-archrouter-backend"] == backend and raw.headers["x-archrouter-rule"] == rule
    assert resp.model == backend and resp.usage.completion_tokens >= 1
    assert resp.choices[0].finish_reason in {"stop", "length"}
    stream = client.chat.completions.create(model=model, messages=messages, max_tokens=6, temperature=0,
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    # greedy decoding: the tokens streamed through the handle are the ones of the plain answer
    assert text == resp.choices[0].message.content and finish == [resp.choices[0].finish_reason]
    assert chunks[-1].usage.completion_tokens == resp.usage.completion_tokens


def test_openai_fields_through_the_handles(client):
    """n, a prompt list, logprobs and a grammar cross the Ray handle as chunks tagged with their choice; a
    request the replica refuses (a token id outside its vocabulary) stays a 400 naming the field."""
    schema = {"type": "object", "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 9}},
              "required": ["a"], "additionalProperties": False}
    fmt = {"type": "json_schema", "json_schema": {"name": "p", "schema": schema}}
    batch = client.completions.create(model="mamba", prompt=["one", "two"], n=2, max_tokens=8, temperature=0,
                                      logprobs=1, extra_body={"response_format": fmt})
    assert [c.index for c in batch.choices] == [0, 1, 2, 3]
    assert batch.choices[0].text == batch.choices[1].text and batch.choices[2].text == batch.choices[3].text
    for c in batch.choices:
        assert json.loads(c.text)["a"] in range(10) and c.logprobs.tokens and c.finish_reason == "stop"
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="transformer", prompt="x", max_tokens=2, logit_bias={"99999": 1})
    assert e.value.body["param"] == "logit_bias" and "99999" in e.value.body["message"]


def test_completions_endpoint_streams_sse(app):
    body = {"model": "transformer", "prompt": "Once upon", "max_tokens": 4, "stream": True}
    with httpx.stream("POST", app["url"] + "/v1/completions", json=body, headers=AUTH, timeout=60) as r:
        lines = [line for line in r.iter_lines() if line]
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert lines[-1] == "data: [DONE]" and all(line.startswith("data: ") for line in lines)
    assert json.loads(lines[-2][6:])["choices"][0]["finish_reason"] in {"stop", "length"}


def test_replica_errors_keep_their_type(app):
    # ContextLengthExceeded raised in the transformer replica comes out of the handle client as itself
    # (Ray wraps it in a RayTaskError; the router's dispatch needs the type and the replica's message)
    import asyncio

    from archrouter.backends.protocol import ContextLengthExceeded, GenerationRequest, SamplingParams
    from archrouter.router.ray_client import ray_factory

    handle = serve.get_deployment_handle("backend-transformer", app_name="archrouter")
    client = ray_factory({"transformer": handle})("transformer", None)
    assert client.info.family == "transformer" and client.info.context_length == 192

    async def go() -> None:
        request = GenerationRequest("req-long", SamplingParams(max_tokens=8), prompt=LONG)
        with pytest.raises(ContextLengthExceeded) as err:
            await anext(client.generate(request))
        assert type(err.value) is ContextLengthExceeded and err.value.limit == 192
        assert str(err.value).startswith("prompt is ") and "Ray" not in str(err.value)
        short = GenerationRequest("req-short", SamplingParams(max_tokens=3, temperature=0), prompt="hi")
        chunks = [c async for c in client.generate(short)]
        assert chunks[-1].finish_reason in {"stop", "length"} and chunks[-1].completion_tokens == len(chunks)

    asyncio.run(go())

    # BackendOverloaded: 2 running + 2 waiting per engine, so a burst of 12 pinned requests overflows it
    def one(_):
        return httpx.post(app["url"] + "/v1/completions", headers=AUTH, timeout=60, json={
            "model": "transformer", "prompt": "count", "max_tokens": 48, "temperature": 0, "stop": []})

    with cf.ThreadPoolExecutor(12) as pool:
        results = list(pool.map(one, range(12)))
    codes = sorted(r.status_code for r in results)
    assert set(codes) <= {200, 429} and 200 in codes and 429 in codes, codes
    refused = [r.json()["error"] for r in results if r.status_code == 429]
    assert all(e["code"] == "backend_overloaded" for e in refused)


def _route(url: str) -> tuple[str, str]:
    r = httpx.post(url + "/v1/route", headers=AUTH, timeout=30,
                   json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]})
    r.raise_for_status()
    return r.headers["x-archrouter-replica"], r.json()["policy"]


def _policies_by_replica(url: str, until, timeout: float = 30.0) -> dict[str, str]:
    """Poll /v1/route through the proxy until `until(latest policy per replica)` holds."""
    seen: dict[str, str] = {}
    end = time.time() + timeout
    while time.time() < end:
        replica, policy = _route(url)
        seen[replica] = policy
        if until(seen):
            return seen
    raise AssertionError(f"policies per replica after {timeout}s: {seen}")


def test_policy_change_reaches_every_ingress_replica(app):
    url = app["url"]
    before = _policies_by_replica(url, lambda s: len(s) == 2)
    assert len(set(before.values())) == 1 and next(iter(before.values())).startswith("ray-a@")

    # invalid (a rule routes to a backend that is not in the catalogue): refused, published nowhere
    bad = policy_text(app["models"], name="ray-bad").replace("route: mamba\n", "route: mambo\n", 1)
    r = httpx.put(url + "/admin/policy", content=bad, headers=AUTH, timeout=30)
    assert r.status_code == 422 and "mambo" in r.json()["error"]["message"]
    # valid but naming a backend with no deployment: refused too
    extra = "  - name: ghost\n    family: rwkv\n    checkpoint: /nonexistent\n    context_length: 64\n"
    ghost = policy_text(app["models"], name="ray-ghost").replace("rules:\n", extra + "rules:\n", 1)
    r = httpx.put(url + "/admin/policy", content=ghost, headers=AUTH, timeout=60)
    assert r.status_code == 422 and "ghost" in r.json()["error"]["message"]
    unchanged = _policies_by_replica(url, lambda s: len(s) == 2)
    assert unchanged == before

    # valid: accepted by one replica, published through Redis, swapped in by both
    good = policy_text(app["models"], name="ray-b", default="mamba")
    r = httpx.put(url + "/admin/policy", content=good, headers=AUTH, timeout=60)
    assert r.status_code == 200, r.text
    new_id = r.json()["policy"]
    assert new_id.startswith("ray-b@")
    after = _policies_by_replica(url, lambda s: len(s) == 2 and set(s.values()) == {new_id})
    assert set(after) == set(before)  # the same two replicas, both on the new version
    r = httpx.post(url + "/v1/route", headers=AUTH, timeout=30,
                   json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]}).json()
    assert r["backend"] == "mamba" and r["rule"] == "default" and r["fallbacks"] == ["transformer"]
    # the key holds the version in force, for replicas that start later
    put_back = httpx.put(url + "/admin/policy", content=policy_text(app["models"], name="ray-a"), headers=AUTH,
                         timeout=60)
    assert put_back.status_code == 200
    _policies_by_replica(url, lambda s: len(s) == 2 and set(s.values()) == {put_back.json()["policy"]})


def _replica_actors(deployment: str) -> list[str]:
    return [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
            if a["name"].startswith("SERVE_REPLICA::") and f"#{deployment}#" in a["name"]]


def test_killed_backend_replica_falls_back_and_loses_nothing(app):
    url = app["url"]
    [victim] = _replica_actors("backend-transformer")

    def one(i: int) -> dict:
        body = {"model": "auto", "messages": [{"role": "user", "content": f"story {i}"}], "max_tokens": 150,
                "temperature": 0, "stream": i % 2 == 0}
        try:
            with httpx.stream("POST", url + "/v1/chat/completions", json=body, headers=AUTH, timeout=90) as r:
                raw = r.read().decode()
        except httpx.HTTPError as exc:  # the connection broke: the request was lost
            return {"i": i, "lost": repr(exc)}
        out = {"i": i, "status": r.status_code, "backend": r.headers.get("x-archrouter-backend"),
               "fallback_from": r.headers.get("x-archrouter-fallback-from")}
        if body["stream"] and r.status_code == 200:
            events = [json.loads(x[6:]) for x in raw.split("\n\n") if x.startswith("data: {")]
            out["complete"] = raw.rstrip().endswith("data: [DONE]") and (
                any(e.get("choices") and e["choices"][0]["finish_reason"] for e in events)
                or any("error" in e for e in events))
            out["error"] = next((e["error"]["code"] for e in events if "error" in e), None)
        else:
            data = json.loads(raw)
            out["complete"] = "choices" in data or "error" in data
            out["error"] = data.get("error", {}).get("code")
        return out

    n = 24
    with cf.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(one, i) for i in range(n)]
        time.sleep(1.0)  # requests queued and streaming on the transformer replica
        ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
        results = [f.result() for f in futures]

    lost = [r for r in results if "lost" in r or not r["complete"]]
    assert not lost, lost
    assert len(results) == n
    fell_back = [r for r in results if r["fallback_from"] == "transformer"]
    assert fell_back and all(r["backend"] == "mamba" and r["status"] == 200 for r in fell_back), results
    # the decision log says why: some requests found the transformer deployment down, not just busy
    def down_reasons() -> list[str]:
        records = [json.loads(f[b"record"]) for _, f in redis.Redis.from_url(REDIS_URL).xrange(app["stream"])]
        reasons = [r["fallback_errors"].get("transformer", "") for r in records if "fallback_errors" in r]
        return [why for why in reasons if "unavailable" in why or "no replica" in why]

    end = time.time() + 15  # the log is written to Redis in the background
    while not down_reasons() and time.time() < end:
        time.sleep(0.2)
    assert down_reasons(), results
    # every failure is an error the client saw (mid-stream: an error event; otherwise an HTTP error)
    assert all(r["status"] == 200 and r["error"] is None or r["error"] for r in results), results

    # Serve replaces the killed replica; pinned requests to transformer work again
    end = time.time() + 90
    while time.time() < end:
        if _replica_actors("backend-transformer") not in ([], [victim]):
            r = httpx.post(url + "/v1/completions", headers=AUTH, timeout=60,
                           json={"model": "transformer", "prompt": "back", "max_tokens": 2})
            if r.status_code == 200:
                break
        time.sleep(0.5)
    else:
        raise AssertionError("the killed backend replica was not replaced")
    assert r.headers["x-archrouter-backend"] == "transformer"


@pytest.mark.filterwarnings("ignore:coroutine .BackendServer.__del__. was never awaited")  # Serve awaits it
def test_health_check_fails_once_the_engine_stops(app):
    # Serve replaces a replica whose check_health raises; the check asks the engine itself
    import asyncio

    from archrouter import ray_app
    spec = {"family": "mamba", "checkpoint": str(app["models"] / "mamba"), "context_length": 64}
    server = ray_app.BackendServer.func_or_class("mamba", spec, "cpu")

    async def go() -> None:
        await server.check_health()  # a running engine passes
        await server.client.close()
        with pytest.raises(RuntimeError, match="not running"):
            await server.check_health()

    asyncio.run(go())
