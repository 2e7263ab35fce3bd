"""Capability-aware fallbacks through the real server: real engines, the official openai client, Redis.

Four backends share one tiny checkpoint; the policy's `capability:` matrix says `full` > `good` > `poor` >
`stopped` for every task, while the catalogue (and cost) order is poor, stopped, good, full, so a
fallback that follows the matrix is told apart from one that follows the list or the price.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import httpx
import openai
import pytest
import redis

from archrouter.backends.engine import Engine, EngineConfig
from archrouter.router.settings import Settings
from tests.conftest import CLASSIFIER, REDIS_URL
from tests.router.conftest import LiveServer, free_port
from tests.router.faults import redis_ping

ACC = {"poor": 0.3, "stopped": 0.1, "good": 0.8, "full": 0.9}
TASKS = ("chat", "recall", "state_tracking", "long_document", "sequential_data", "code")


def policy(ckpt) -> str:
    backends = "".join(f"""
  - name: {name}
    family: transformer
    checkpoint: {ckpt}
    context_length: 512
    cost:
      prefill_ms: {{base: {1.0 + i}, per_token: 0.01}}
      decode_ms: {{base: {1.0 + i}}}
      price_per_gpu_hour: 1.0
""" for i, name in enumerate(ACC))
    tasks = "".join(f"""
    {t}:
      accuracy: {{{", ".join(f"{n}: [{a}]" for n, a in ACC.items())}}}""" for t in TASKS)
    return f"""
name: capfb
classifier: {CLASSIFIER}
backends:{backends}
rules:
  - name: to-stopped
    when: {{metadata.path: stopped}}
    route: stopped
  - name: to-full
    when: {{metadata.path: full}}
    route: full
  - name: static
    when: {{metadata.path: static}}
    route: stopped
    fallbacks: [poor]
default: {{route: good}}
capability:
  source: test
  tasks:{tasks}
"""


@pytest.fixture(scope="module")
def live(model_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("capfb")
    (d / "policy.yaml").write_text(policy(model_dir / "tiny"))
    engines: dict[str, Engine] = {}

    def factory(name: str, spec) -> Engine:
        # `full` runs one sequence and queues none: a second request while it works is refused (429 inside)
        config = EngineConfig(max_num_seqs=1, max_waiting=0) if name == "full" else EngineConfig()
        engines[name] = Engine.from_checkpoint(name, spec.family, spec.checkpoint, context_length=512,
                                               device="cpu", config=config)
        return engines[name]

    stream = f"archrouter:test:capfb:{uuid.uuid4().hex}"
    settings = Settings(host="127.0.0.1", port=free_port(), policy=str(d / "policy.yaml"), log_format="json",
                        redis_url=REDIS_URL if redis_ping(REDIS_URL) else None, decision_stream=stream,
                        watch_policy=False, request_timeout_s=2.0, max_tokens_cap=512)
    with LiveServer(settings, factory=factory) as server:
        asyncio.run(engines["stopped"].close())  # a backend whose engine has stopped: it never answers
        server.stream = stream
        yield server
    if redis_ping(REDIS_URL):
        redis.Redis.from_url(REDIS_URL).delete(stream)


@pytest.fixture()
def client(live):
    return openai.OpenAI(base_url=live.url + "/v1", api_key="unused", max_retries=0)


def ask(client, path: str, **kw):
    return client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "hello there"}], max_tokens=4, temperature=0,
        metadata={"path": path}, **kw)


def records(live) -> dict[str, dict]:
    if live.router.decisions.redis is None:
        return {}
    rows = redis.Redis.from_url(REDIS_URL).xrange(live.stream)
    return {r["request_id"]: r for r in (json.loads(f[b"record"]) for _, f in rows)}


def test_route_shows_the_matrix_ranked_fallback_plan(live) -> None:
    r = httpx.post(live.url + "/v1/route", json={"model": "auto", "metadata": {"path": "stopped"},
                                                 "messages": [{"role": "user", "content": "hello there"}]})
    body = r.json()
    assert body["backend"] == "stopped" and body["fallbacks"] == ["full", "good", "poor"]
    assert body["expected_accuracy"] == ACC
    assert body["fallback_plan"] == [{"backend": "full", "expected_delta": 0.8},
                                     {"backend": "good", "expected_delta": 0.7},
                                     {"backend": "poor", "expected_delta": 0.2}]
    static = httpx.post(live.url + "/v1/route", json={"model": "auto", "metadata": {"path": "static"},
                                                      "messages": [{"role": "user", "content": "hi"}]}).json()
    assert static["fallbacks"] == ["poor"]  # a static list overrides the matrix


def test_stopped_backend_falls_back_to_the_best_remaining_family(live, client) -> None:
    raw = ask(client, "stopped")
    h = raw.headers
    assert h["x-archrouter-backend"] == "full"  # not poor (cheapest, first in the catalogue)
    assert h["x-archrouter-fallback-from"] == "stopped"
    assert h["x-archrouter-fallback-reason"] == "unhealthy"
    assert h["x-archrouter-expected-delta"] == "+0.800"
    rid = raw.parse().id
    if live.router.decisions.redis is not None:
        deadline = time.time() + 5
        while rid not in records(live) and time.time() < deadline:
            time.sleep(0.05)
        from tests.router.test_response_cache import live_rows

        row = [r for r in live_rows(live, rid) if r.get("request_id") == rid][0]  # the dashboard's live view
        assert row["fallback"]["reason"] == "unhealthy" and row["fallback"]["expected_delta"] == 0.8
        fb = records(live)[rid]["fallback"]
        assert (fb["from"], fb["to"], fb["reason"], fb["expected_delta"]) == ("stopped", "full", "unhealthy", 0.8)
        assert "shut down" in fb["error"]


def test_full_queue_falls_back_to_the_next_best(live, client) -> None:
    # occupy full's only seat with a long stream, then ask again while it is still generating
    with httpx.stream("POST", live.url + "/v1/chat/completions", timeout=30, json={
        "model": "full", "messages": [{"role": "user", "content": "tell me a long story"}], "max_tokens": 480,
        "stream": True, "temperature": 0,
    }) as s:
        assert s.status_code == 200
        lines = s.iter_lines()
        assert next(ln for ln in lines if ln.startswith("data: "))
        raw = ask(client, "full")
        for _ in lines:  # drain, so the seat is free for the next test
            pass
    h = raw.headers
    assert h["x-archrouter-backend"] == "good"
    assert (h["x-archrouter-fallback-from"], h["x-archrouter-fallback-reason"]) == ("full", "overloaded")
    assert h["x-archrouter-expected-delta"] == "-0.100"
    # the decided backend answers when it can: no fallback headers at all (once its step thread has freed the
    # finished stream's seat, at its next step)
    engine = live.router.pool.clients["full"]
    deadline = time.time() + 10
    while engine.stats()["running"] + engine.stats()["waiting"] and time.time() < deadline:
        time.sleep(0.01)
    again = ask(client, "full").headers
    assert again["x-archrouter-backend"] == "full" and "x-archrouter-fallback-from" not in again
