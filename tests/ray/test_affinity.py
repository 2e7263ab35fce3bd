"""Recurrent-state affinity through Serve's request-router extension: two replicas of one family, real Redis,
the official openai client. A conversation's later turns go to the replica that served its earlier ones."""

from __future__ import annotations

import time
import uuid

import openai
import pytest
import redis

from archrouter.backends.families import init_random
from archrouter.router.ray_affinity import conversation_key
from tests.conftest import CLASSIFIER, REDIS_URL, ROOT
from tests.router.conftest import free_port

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    from archrouter import ray_app

    models = tmp_path_factory.mktemp("affinity")
    init_random("mamba", "tiny", models / "mamba", seed=2)
    policy = models / "policy.yaml"
    policy.write_text(f"""
name: affinity
classifier: {CLASSIFIER}
backends:
  - {{name: mamba, family: mamba, checkpoint: {models / "mamba"}, context_length: 2048}}
default: {{route: mamba}}
""")
    ns = f"archrouter:test:aff:{uuid.uuid4().hex}"
    port = free_port()
    ray.init(address="local", num_cpus=3, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": f"{ROOT / 'src'}:{ROOT}"}})
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        args = {"policy": str(policy), "affinity_prefix": ns,
                "settings": {"redis_url": REDIS_URL, "policy_key": f"{ns}:key", "policy_channel": f"{ns}:policy",
                             "decision_stream": f"{ns}:decisions", "watch_policy": False, "log_format": "json"},
                "ingress": {"num_replicas": 1, "max_ongoing_requests": 64, "ray_actor_options": {"num_cpus": 0.1}},
                "backend_defaults": {"num_replicas": 2, "max_ongoing_requests": 8,
                                     "ray_actor_options": {"num_cpus": 0.2}}}
        serve.run(ray_app.build(args), name="archrouter", route_prefix="/")
        yield {"url": f"http://127.0.0.1:{port}", "ns": ns}
    finally:
        serve.shutdown()
        ray.shutdown()
        r = redis.Redis.from_url(REDIS_URL)
        for k in r.scan_iter(f"{ns}*"):
            r.delete(k)


def test_conversation_key_is_the_opening() -> None:
    from archrouter.backends.protocol import GenerationRequest, SamplingParams

    one = [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}]
    later = [*one, {"role": "assistant", "content": "hello"}, {"role": "user", "content": "more"}]
    req = lambda m: GenerationRequest(request_id="r", sampling=SamplingParams(), messages=m)  # noqa: E731
    assert conversation_key(req(one)) == conversation_key(req(later))
    assert conversation_key(req([{"role": "user", "content": "other"}])) != conversation_key(req(one))
    # a session (the request's `user`) names the conversation whatever its messages
    a = GenerationRequest(request_id="r", sampling=SamplingParams(), messages=one, session="u1")
    b = GenerationRequest(request_id="r", sampling=SamplingParams(), messages=[{"role": "user", "content": "x"}],
                          session="u1")
    assert conversation_key(a) == conversation_key(b) != conversation_key(req(one))


def test_turns_of_a_conversation_stay_on_the_replica_holding_their_state(app) -> None:
    client = openai.OpenAI(base_url=app["url"] + "/v1", api_key="unused", max_retries=0, timeout=60)
    r = redis.Redis.from_url(REDIS_URL)
    owners = []
    for conv in range(2):
        messages = [{"role": "user", "content": f"conversation {conv}: count the sheep, please"}]
        for turn in range(4):
            resp = client.chat.completions.create(model="auto", messages=messages, max_tokens=4, temperature=0)
            messages += [{"role": "assistant", "content": resp.choices[0].message.content},
                         {"role": "user", "content": f"and turn {turn}?"}]
        keys = list(r.scan_iter(f"{app['ns']}:table:*"))
        owners.append({k: r.get(k) for k in keys})
    stats = {}
    deadline = time.time() + 5
    while time.time() < deadline:  # the counters are written just after routing
        stats = {k.decode(): int(v) for k, v in r.hgetall(f"{app['ns']}:stats").items()}
        if stats.get("turns", 0) >= 6:
            break
        time.sleep(0.1)
    assert stats.get("new") == 2 and stats.get("turns") == 6
    assert stats.get("owner_routed") == 6  # every later turn went to the replica that holds its state
    assert len(owners[-1]) == 2 and all(v for v in owners[-1].values())
    assert 0 < r.ttl(next(iter(owners[-1]))) <= 3600


def _replica_actor(replica_id: str) -> dict | None:
    """The named actor of a Serve replica (`SERVE_REPLICA::<app>#<deployment>#<unique id>`), if alive."""
    return next((a for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].endswith("#" + replica_id)),
                None)


def test_a_lost_owner_leaves_the_state_to_redis(app) -> None:
    """The replica holding a conversation's state dies: the next turn goes to another replica, which restores the
    state from the shared tier (Redis) instead of prefilling the whole conversation again."""
    client = openai.OpenAI(base_url=app["url"] + "/v1", api_key="unused", max_retries=0, timeout=60)
    r = redis.Redis.from_url(REDIS_URL)
    messages = [{"role": "user", "content": "a conversation whose replica dies: count the goats in the barn, "
                                            "then the sheep in the field, then the hens in the yard"}]
    for turn in range(2):
        resp = client.chat.completions.create(model="auto", messages=messages, max_tokens=4, temperature=0)
        messages += [{"role": "assistant", "content": resp.choices[0].message.content},
                     {"role": "user", "content": f"and after turn {turn}?"}]
    key = conversation_key(_request(messages))
    owner = r.get(f"{app['ns']}:table:{key}").decode()
    actor = _replica_actor(owner)
    ray.kill(ray.get_actor(actor["name"], namespace=actor["namespace"]), no_restart=True)
    deadline = time.time() + 90
    while time.time() < deadline:  # Serve replaces the dead replica; the ingress's handle learns the new set
        states = serve.status().applications["archrouter"].deployments["backend-mamba"].replica_states
        if _replica_actor(owner) is None and states.get("RUNNING", 0) == 2:
            break
        time.sleep(0.5)
    resp = client.chat.completions.create(model="auto", messages=messages, max_tokens=4, temperature=0)
    assert resp.usage.prompt_tokens_details.cached_tokens > 0  # restored from Redis, not prefilled
    assert r.get(f"{app['ns']}:table:{key}").decode() != owner
    deadline = time.time() + 5
    while time.time() < deadline and not r.hget(f"{app['ns']}:stats", "owner_gone"):
        time.sleep(0.1)
    assert int(r.hget(f"{app['ns']}:stats", "owner_gone")) == 1


def _request(messages):  # noqa: ANN001, ANN202
    from archrouter.backends.protocol import GenerationRequest, SamplingParams

    return GenerationRequest(request_id="r", sampling=SamplingParams(), messages=messages)
