"""Reliability and security against real servers on loopback: keys, shared rate limits (real Redis),
limits on input, fallbacks and cooldowns with misbehaving real backends, timeouts, a Redis outage,
and SIGTERM during streams on a real `archrouter serve --embedded` process."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import openai
import pytest
import redis
import structlog.testing
import yaml
from typer.testing import CliRunner

from archrouter import cli
from archrouter.router.auth import KeyStore
from archrouter.router.decision_log import DecisionLog
from archrouter.router.metrics import Metrics
from archrouter.router.settings import Settings
from tests.conftest import CLASSIFIER, REDIS_URL, ROOT
from tests.router.conftest import LiveServer, free_port, policy_text
from tests.router.faults import faulty_factory, redis_outage, redis_ping

needs_redis = pytest.mark.skipif(not redis_ping(REDIS_URL), reason="needs the environment's Redis at " + REDIS_URL)


def metric(text: str, name: str, **labels: str) -> float | None:
    """One sample's value from Prometheus text, or None when absent."""
    for line in text.splitlines():
        m = re.fullmatch(rf"{name}(?:\{{(.*)\}})? (\S+)", line)
        if m and all(f'{k}="{v}"' in (m.group(1) or "") for k, v in labels.items()):
            return float(m.group(2))
    return None


def wait_for(pred, timeout: float = 10.0) -> bool:
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False


def stream_records(stream: str) -> list[dict]:
    return [json.loads(f[b"record"]) for _, f in redis.Redis.from_url(REDIS_URL).xrange(stream)]


def add_key(path: Path, name: str, *extra: str) -> str:
    res = CliRunner().invoke(cli.app, ["keys", "add", "--name", name, "--file", str(path), *extra])
    assert res.exit_code == 0, res.output
    return res.output.strip().splitlines()[-1]


# ---------------------------------------------------------------- a server with keys, sharing Redis


@pytest.fixture(scope="module")
def keyed(model_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("keyed")
    (d / "policy.yaml").write_text(policy_text(model_dir))
    keys = {name: add_key(d / "keys.yaml", name, *extra) for name, extra in {
        "alice": ("--backends", "tiny"),
        "bob": ("--rpm", "2"),
        "shared": ("--rpm", "5"),
        "outage": ("--rpm", "3"),
        "root": ("--admin",),
    }.items()}
    stream = f"archrouter:test:rel:{uuid.uuid4().hex}"
    settings = Settings(host="127.0.0.1", port=free_port(), policy=str(d / "policy.yaml"), log_format="json",
                        redis_url=REDIS_URL if redis_ping(REDIS_URL) else None, decision_stream=stream,
                        keys_file=str(d / "keys.yaml"), ratelimit_redis_retry_s=0.5, watch_policy=False)
    with LiveServer(settings) as live:
        live.keys, live.stream, live.settings = keys, stream, settings
        yield live
    if redis_ping(REDIS_URL):
        redis.Redis.from_url(REDIS_URL).delete(stream)


def oai(live, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=live.url + "/v1", api_key=key, max_retries=0)


def test_keys_add_stores_only_a_salted_hash(tmp_path):
    k1, k2 = add_key(tmp_path / "k.yaml", "one", "--backends", "tiny,small"), add_key(tmp_path / "k.yaml", "two")
    text = (tmp_path / "k.yaml").read_text()
    for key in (k1, k2):
        prefix, kid, secret = key.split("-", 2)
        assert prefix == "ar" and len(secret) >= 32
        assert secret not in text and key not in text
    recs = yaml.safe_load(text)["keys"]
    assert [r["name"] for r in recs] == ["one", "two"] and recs[0]["backends"] == ["tiny", "small"]
    salts = [r["hash"].split("$")[1] for r in recs]
    assert all(r["hash"].startswith("sha256$") for r in recs) and salts[0] != salts[1]
    store = KeyStore.from_config(str(tmp_path / "k.yaml"), None, None)
    assert store.authenticate(f"Bearer {k1}").name == "one"
    assert store.authenticate(f"Bearer {k2}").backends is None


def test_missing_and_wrong_keys_are_401_openai_shaped(keyed):
    body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    r = httpx.post(keyed.url + "/v1/chat/completions", json=body)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    assert r.json()["error"]["code"] == "invalid_api_key" and "Authorization: Bearer" in r.json()["error"]["message"]
    _, kid, secret = keyed.keys["alice"].split("-", 2)
    for wrong in ("sk-not-ours", f"ar-{kid}-{secret[:-1]}x", f"ar-zzzzzz-{secret}", "ar--", "Bearer"):
        with pytest.raises(openai.AuthenticationError) as exc:
            oai(keyed, wrong).chat.completions.create(**body)
        assert exc.value.status_code == 401 and exc.value.body["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        oai(keyed, "sk-wrong").models.list()
    assert oai(keyed, keyed.keys["alice"]).chat.completions.create(**body).choices[0].message is not None


def test_key_scoped_to_backends(keyed):
    alice = oai(keyed, keyed.keys["alice"])
    with pytest.raises(openai.PermissionDeniedError) as exc:
        alice.completions.create(model="small", prompt="hi", max_tokens=2)
    assert exc.value.body["code"] == "backend_not_allowed" and "small" in exc.value.body["message"]
    # the policy sends a long prompt to `small` (fallback tiny): alice is answered by tiny, never small
    long = [{"role": "user", "content": "word " * 70}]
    raw = alice.chat.completions.with_raw_response.create(model="auto", messages=long, max_tokens=2)
    assert raw.headers["x-archrouter-rule"] == "long-prompt+fallback" and raw.headers["x-archrouter-backend"] == "tiny"
    assert [m.id for m in alice.models.list().data] == ["auto", "tiny"]
    everyone = oai(keyed, keyed.keys["root"])
    assert {m.id for m in everyone.models.list().data} == {"auto", "tiny", "small"}
    raw = everyone.chat.completions.with_raw_response.create(model="auto", messages=long, max_tokens=2)
    assert raw.headers["x-archrouter-backend"] == "small"


def test_admin_endpoints_need_the_admin_key(keyed):
    auth = {name: {"authorization": f"Bearer {k}"} for name, k in keyed.keys.items()}
    with httpx.Client(base_url=keyed.url) as c:
        assert c.get("/admin/policy").status_code == 401
        r = c.get("/admin/policy", headers=auth["alice"])
        assert r.status_code == 403 and r.json()["error"]["code"] == "admin_required"
        assert c.post("/admin/policy/reload", headers=auth["bob"]).status_code == 403
        assert c.put("/admin/policy", headers=auth["alice"], content=b"name: x").status_code == 403
        r = c.get("/admin/policy", headers=auth["root"])
        assert r.status_code == 200 and "long-prompt" in r.text
        assert c.post("/admin/policy/reload", headers=auth["root"]).json()["reloaded"] is True


@pytest.mark.parametrize(("host", "keys", "bound", "says"), [
    ("0.0.0.0", False, "127.0.0.1", "instead of 0.0.0.0"),
    ("::", False, "127.0.0.1", "instead of ::"),
    ("10.1.2.3", False, "127.0.0.1", "ARCHROUTER_API_KEYS"),
    ("127.0.0.1", False, "127.0.0.1", "loopback only"),
    ("::1", False, "::1", "loopback only"),
    ("localhost", False, "localhost", "loopback only"),
    ("0.0.0.0", True, "0.0.0.0", None),
])
def test_without_keys_the_server_binds_loopback_only(host, keys, bound, says):
    got, notice = cli.bind_host(host, keys_enabled=keys)
    assert got == bound
    assert (notice is None) if says is None else (says in notice)


# ---------------------------------------------------------------- rate limits


def test_429_with_retry_after_and_ratelimit_headers(keyed):
    bob = oai(keyed, keyed.keys["bob"])
    seen = []
    for _ in range(2):
        raw = bob.completions.with_raw_response.create(model="tiny", prompt="x", max_tokens=1)
        seen.append(raw.headers)
    assert [h["x-ratelimit-limit-requests"] for h in seen] == ["2", "2"]
    assert [h["x-ratelimit-remaining-requests"] for h in seen] == ["1", "0"]
    assert all(h["x-ratelimit-limit-tokens"] and h["x-ratelimit-reset-requests"].endswith("s") for h in seen)
    with pytest.raises(openai.RateLimitError) as exc:
        bob.completions.create(model="tiny", prompt="x", max_tokens=1)
    h = exc.value.response.headers
    assert exc.value.status_code == 429 and exc.value.body["code"] == "rate_limit_exceeded"
    assert 1 <= int(h["retry-after"]) <= 30  # 2/min refills one request in 30 s
    assert h["x-ratelimit-remaining-requests"] == "0" and "x-ratelimit-reset-tokens" in h
    text = httpx.get(keyed.url + "/metrics").text
    assert metric(text, "archrouter_rate_limited_total", key="bob") == 1.0


@needs_redis
def test_two_routers_sharing_redis_enforce_one_budget(keyed):
    with LiveServer(keyed.settings.model_copy(update={"port": free_port()})) as other:
        codes = {}
        for i in range(10):  # alternate between the two processes' apps; the key allows 5/min in all
            srv = (keyed, other)[i % 2]
            r = httpx.post(srv.url + "/v1/completions", json={"model": "tiny", "prompt": "x", "max_tokens": 1},
                           headers={"authorization": f"Bearer {keyed.keys['shared']}"}, timeout=30)
            codes.setdefault(srv.url, []).append(r.status_code)
        both = codes[keyed.url] + codes[other.url]
        assert both.count(200) == 5 and both.count(429) == 5, codes
        assert 200 in codes[other.url] and 429 in codes[other.url]  # each app both served and refused


@needs_redis
@pytest.mark.slow
def test_redis_outage_local_limits_logged_then_back_and_no_decision_lost(keyed):
    auth = {"authorization": f"Bearer {keyed.keys['outage']}"}
    body = {"model": "tiny", "prompt": "outage", "max_tokens": 1}
    with httpx.Client(base_url=keyed.url, timeout=30) as c, structlog.testing.capture_logs() as logs:
        assert c.post("/v1/completions", json=body, headers=auth).status_code == 200
        assert metric(c.get("/metrics").text, "archrouter_ratelimit_redis") == 1.0
        with redis_outage():
            during = [c.post("/v1/completions", json=body, headers=auth) for _ in range(4)]
            text = c.get("/metrics").text
        # the service stayed up on local buckets (a fresh local bucket of 3/min, so the 4th is refused)
        assert [r.status_code for r in during] == [200, 200, 200, 429]
        assert metric(text, "archrouter_ratelimit_redis") == 0.0
        assert "ratelimit_redis_down_using_local" in [e["event"] for e in logs]
        assert metric(text, "archrouter_decision_log_pending") >= 1
        ids = [r.json()["id"] for r in during[:3]]
        # back to Redis once it answers (retried every 0.5 s here). The restarted Redis kept nothing
        # (--save ""), so its bucket is full again: 200 with 2 of 3 left, where the spent local one says 429
        time.sleep(0.6)
        after = c.post("/v1/completions", json=body, headers=auth)
        assert after.status_code == 200 and after.headers["x-ratelimit-remaining-requests"] == "2"
        assert metric(c.get("/metrics").text, "archrouter_ratelimit_redis") == 1.0
        assert "ratelimit_redis_back" in [e["event"] for e in logs]
        # the decisions made while Redis was down reached the stream afterwards, none dropped
        assert wait_for(lambda: set(ids) <= {r["request_id"] for r in stream_records(keyed.stream)}, 10)
        text = c.get("/metrics").text
        assert metric(text, "archrouter_decision_log_pending") == 0.0
        assert metric(text, "archrouter_decision_log_failures_total") >= 1
        assert metric(text, "archrouter_decision_log_dropped_total") == 0.0


async def test_decision_log_buffer_is_bounded_and_drops_are_counted():
    # a real client against a port nothing listens on: every write fails, as with Redis down
    metrics = Metrics()
    dl = DecisionLog(metrics, f"redis://127.0.0.1:{free_port()}/0", "s", 100, buffer=3)
    dl.RETRY_S = 0.05
    dl.start()
    for i in range(8):
        await dl.record({"request_id": f"r{i}"})
    assert [json.loads(p)["request_id"] for p in dl.pending] == ["r5", "r6", "r7"]  # oldest dropped first
    assert metrics.decision_log_dropped._value.get() == 5
    assert metrics.decision_log_pending._value.get() == 3
    await dl.close(drain_s=0.1)


# ---------------------------------------------------------------- misbehaving backends, limits on input

FAULT_POLICY = """
name: faults
classifier: {classifier}
backends:
{backends}
rules:
  - name: mid-stream
    when: {{metadata.path: midfail}}
    route: midfail
    fallbacks: [small]
  - name: slow-path
    when: {{metadata.path: slow}}
    route: slow
    fallbacks: [small]
  - name: broken-path
    when: {{metadata.path: broken}}
    route: broken
    fallbacks: [small]
default: {{route: tiny, fallbacks: [small]}}
"""
BACKEND = """  - name: {name}
    family: transformer
    checkpoint: {ckpt}
    context_length: {ctx}
    cost:
      prefill_ms: {{base: 1.0, per_token: 0.01}}
      decode_ms: {{base: 2.0}}
"""


@pytest.fixture(scope="module")
def faulty(model_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("faulty")
    backends = "".join(BACKEND.format(name=n, ckpt=model_dir / ("small" if n == "small" else "tiny"),
                                      ctx=1024 if n == "small" else 512)
                       for n in ("tiny", "small", "broken", "midfail", "slow"))
    (d / "policy.yaml").write_text(FAULT_POLICY.format(classifier=CLASSIFIER, backends=backends))
    factory = faulty_factory({"broken": {"fail_every": 1}, "midfail": {"fail_after_chunks": 2},
                              "slow": {"chunk_delay_s": 0.3}, "small": {}})  # small: only counted
    stream = f"archrouter:test:faults:{uuid.uuid4().hex}"
    settings = Settings(host="127.0.0.1", port=free_port(), policy=str(d / "policy.yaml"), log_format="json",
                        redis_url=REDIS_URL if redis_ping(REDIS_URL) else None, decision_stream=stream,
                        watch_policy=False, max_body_bytes=8192, max_json_depth=16, max_messages=4,
                        max_tokens_cap=64, request_timeout_s=2.0, cooldown_failures=3, cooldown_s=2.0)
    live = LiveServer(settings, factory=factory)
    with live:
        live.made, live.stream = factory.made, stream
        yield live
    if redis_ping(REDIS_URL):
        redis.Redis.from_url(REDIS_URL).delete(stream)


def chat(content: str = "hi", **kw) -> dict:
    return {"model": "auto", "messages": [{"role": "user", "content": content}], "max_tokens": 4, **kw}


def post(live, body=None, *, content: bytes | None = None, path: str = "/v1/chat/completions",
         headers: dict | None = None) -> httpx.Response:
    return httpx.post(live.url + path, json=body, content=content, headers=headers, timeout=30)


@pytest.mark.parametrize(("make", "status", "code", "param"), [
    (lambda: {"content": b'{"model": "auto", "prompt": "' + b"a" * 9000 + b'"}'}, 413, "request_too_large", None),
    (lambda: {"content": b'{"a":' * 40 + b"1" + b"}" * 40}, 400, "json_too_deep", None),
    (lambda: {"content": b"[" * 8000}, 400, "json_too_deep", None),
    (lambda: {"content": b'{"model": "auto", "messages": [{"role": "user", "content": "\xff\xfe"}]}'}, 400,
     "invalid_encoding", None),
    (lambda: {"body": chat("bell \x07 here")}, 400, None, "messages[0].content"),
    (lambda: {"body": chat("nul \x00")}, 400, None, "messages[0].content"),
    (lambda: {"body": {"model": "auto", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "esc \x1b"}]}]}}, 400, None, "messages[0].content[0].text"),
    (lambda: {"body": {"model": "auto", "messages": [{"role": "user", "content": "x"}] * 5}}, 400,
     "too_many_messages", "messages"),
    (lambda: {"body": chat(max_tokens=65)}, 400, "max_tokens_too_large", "max_tokens"),
    (lambda: {"body": chat(max_tokens=None, max_completion_tokens=1000)}, 400, "max_tokens_too_large",
     "max_completion_tokens"),
    (lambda: {"body": chat(stop=["a", "b", "c", "d", "e"])}, 400, None, "stop"),
    (lambda: {"body": chat(stop="z" * 257)}, 400, None, "stop"),
    (lambda: {"body": chat(stop=[""])}, 400, None, "stop"),
    (lambda: {"body": chat("y " * 600, max_tokens=8)}, 400, "context_length_exceeded", "messages"),
])
def test_bad_input_is_a_4xx_naming_the_problem(faulty, make, status, code, param):
    kw = make()
    r = post(faulty, kw.get("body"), content=kw.get("content"),
             headers={"content-type": "application/json"} if "content" in kw else None)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    if code:
        assert err["code"] == code
    if param:
        assert err["param"] == param and param.split("[")[0] in err["message"]
    # and the worker is still there
    assert post(faulty, chat()).status_code == 200


def test_chunked_body_over_the_limit_is_413(faulty):
    def parts():
        yield b'{"model": "auto", "prompt": "'
        for _ in range(20):
            yield b"a" * 1000
        yield b'"}'

    r = httpx.post(faulty.url + "/v1/completions", content=parts(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"


def test_prompt_too_long_for_the_routed_backend_goes_to_one_that_fits(faulty):
    # ~500 prompt tokens + 20: over tiny's 512, within small's 1024; the default rule's fallback fits
    r = post(faulty, chat("z " * 250, max_tokens=20))
    assert r.status_code == 200, r.text
    assert r.headers["x-archrouter-backend"] == "small" and r.headers["x-archrouter-fallback-from"] == "tiny"
    assert r.json()["usage"]["prompt_tokens"] + 20 > 512


def test_generation_timeout_is_504_and_an_error_event_in_a_stream(faulty):
    slow = chat("slow", max_tokens=30, temperature=0, metadata={"path": "slow"})
    t0 = time.perf_counter()
    r = post(faulty, slow)
    assert r.status_code == 504 and r.json()["error"]["code"] == "timeout"
    assert time.perf_counter() - t0 < 8  # 2 s limit; 30 tokens at 0.3 s each would take 9 s
    with httpx.stream("POST", faulty.url + "/v1/chat/completions", json={**slow, "stream": True}, timeout=30) as s:
        events = [ln.removeprefix("data: ") for ln in s.iter_lines() if ln]
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["error"]["code"] == "timeout"
    # the slow backend's worker was released: a short request on it still answers
    ok = post(faulty, chat("slow", max_tokens=2, metadata={"path": "slow"}))
    assert ok.status_code == 200 and ok.headers["x-archrouter-backend"] == "slow"


def test_client_leaving_mid_stream_frees_the_backend(faulty):
    slow = faulty.made["slow"]
    body = chat("leave", max_tokens=30, temperature=0, stream=True, metadata={"path": "slow"})
    with httpx.stream("POST", faulty.url + "/v1/chat/completions", json=body, timeout=30) as s:
        lines = s.iter_lines()
        assert next(lines).startswith("data: ")  # the stream is running (it would take 9 s in full)
    # the client hung up: the generator is closed and its lock released, so the next request on the
    # same backend starts at once instead of waiting out the abandoned stream (request timeout is 2 s)
    calls = slow.calls
    r = post(faulty, chat("next", max_tokens=2, metadata={"path": "slow"}))
    assert r.status_code == 200 and r.headers["x-archrouter-backend"] == "slow" and slow.calls == calls + 1
    text = httpx.get(faulty.url + "/metrics").text
    assert wait_for(lambda: (metric(httpx.get(faulty.url + "/metrics").text, "archrouter_requests_total",
                                    backend="slow", status="499") or 0) >= 1, 5), text


def test_failing_backend_falls_back_then_cools_down(faulty):
    broken = chat("please answer", metadata={"path": "broken"})
    calls = lambda: faulty.made["broken"].calls  # noqa: E731
    seen = []
    for _ in range(3):
        r = post(faulty, broken)
        assert r.status_code == 200 and r.headers["x-archrouter-backend"] == "small"
        assert r.headers["x-archrouter-fallback-from"] == "broken"
        assert r.headers["x-archrouter-fallback-reason"] == "unhealthy"
        assert r.headers["x-archrouter-rule"] == "broken-path+fallback"
        seen.append(r.json()["id"])
    assert calls() == 3
    # three failures within the window: broken sits out, reported in /readyz and /metrics
    ready = httpx.get(faulty.url + "/readyz").json()
    assert 0 < ready["cooldown"]["broken"] <= 2.0
    text = httpx.get(faulty.url + "/metrics").text
    assert metric(text, "archrouter_backend_cooldown", backend="broken") == 1.0
    assert metric(text, "archrouter_backend_cooldown", backend="small") == 0.0
    assert metric(text, "archrouter_fallbacks_total", from_backend="broken", to_backend="small") == 3.0
    r = post(faulty, broken)  # in cooldown it goes last: small answers first, broken is not called
    assert r.headers["x-archrouter-backend"] == "small" and r.headers["x-archrouter-fallback-from"] == "broken"
    assert r.headers["x-archrouter-fallback-reason"] == "cooldown"
    assert calls() == 3
    assert wait_for(lambda: "broken" not in httpx.get(faulty.url + "/readyz").json()["cooldown"], 5)
    r = post(faulty, broken)  # cooldown over: tried again
    assert calls() == 4 and r.headers["x-archrouter-fallback-from"] == "broken"
    if faulty.app.state.router.decisions.redis is not None:
        def recorded():
            return {rec["request_id"]: rec for rec in stream_records(faulty.stream)}
        assert wait_for(lambda: set(seen) <= set(recorded()), 5)
        rec = recorded()[seen[0]]
        assert rec["backend"] == "small" and rec["fallbacks_used"] == ["broken"]
        assert rec["decision"]["backend"] == "broken" and rec["status"] == 200
        assert rec["fallback"]["from"] == "broken" and rec["fallback"]["reason"] == "unhealthy"


def test_mid_stream_failure_ends_the_stream_without_switching(faulty):
    small = faulty.made["small"]
    before = small.calls
    body = chat("tell me a story", max_tokens=30, temperature=0, stream=True, metadata={"path": "midfail"})
    with httpx.stream("POST", faulty.url + "/v1/chat/completions", json=body, timeout=30) as s:
        assert s.status_code == 200 and s.headers["x-archrouter-backend"] == "midfail"
        events = [ln.removeprefix("data: ") for ln in s.iter_lines() if ln]
    assert events[-1] == "[DONE]"
    err = json.loads(events[-2])["error"]
    assert err["code"] == "backend_error" and "midfail" in err["message"]
    chunks = [json.loads(e) for e in events[:-2]]
    assert chunks and all(c["model"] == "midfail" for c in chunks)
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks)
    assert small.calls == before  # no silent switch to the fallback
    text = httpx.get(faulty.url + "/metrics").text
    assert metric(text, "archrouter_requests_total", backend="midfail", status="500") >= 1.0


def test_non_stream_failure_mid_generation_is_retried_on_a_fallback(faulty):
    # nothing has reached the client yet, so retrying on the next candidate duplicates nothing
    small, midfail = faulty.made["small"], faulty.made["midfail"]
    s0, m0 = small.calls, midfail.calls
    r = post(faulty, chat("tell me a story", max_tokens=30, temperature=0, metadata={"path": "midfail"}))
    assert r.status_code == 200 and r.headers["x-archrouter-backend"] == "small" and r.json()["model"] == "small"
    assert r.headers["x-archrouter-fallback-from"] == "midfail"
    assert (small.calls, midfail.calls) == (s0 + 1, m0 + 1)
    # pinned: no fallback to walk, so the failure is the answer
    r = post(faulty, {**chat("tell me a story", max_tokens=30, temperature=0), "model": "midfail"})
    assert r.status_code == 500 and r.json()["error"]["code"] == "backend_error"
    assert "midfail" in r.json()["error"]["message"]


# ---------------------------------------------------------------- SIGTERM during streams


@pytest.mark.slow
def test_sigterm_drains_streams_refuses_new_connections_and_exits_0(model_dir, tmp_path):
    (tmp_path / "policy.yaml").write_text(policy_text(model_dir))
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ARCHROUTER_LOG_FORMAT": "json", "ARCHROUTER_WATCH_POLICY": "0",
           "ARCHROUTER_SHUTDOWN_GRACE_S": "60"}
    env.pop("REDIS_URL", None)
    proc = subprocess.Popen([sys.executable, "-m", "archrouter", "serve", "--embedded",
                             "--port", str(port), "--policy", str(tmp_path / "policy.yaml")],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        assert wait_for(lambda: _up(url), 90), "server did not start"
        results: dict[int, list[str]] = {}
        first = threading.Event()

        def stream(i: int) -> None:
            body = {"model": ("tiny", "small")[i % 2], "prompt": f"stream {i}", "max_tokens": 64,
                    "temperature": 0.8, "seed": i, "stream": True}
            lines = results.setdefault(i, [])
            try:
                with httpx.stream("POST", url + "/v1/completions", json=body, timeout=60) as s:
                    for ln in s.iter_lines():
                        if ln:
                            lines.append(ln)
                            first.set()
            except httpx.HTTPError as exc:
                lines.append(f"client error: {exc!r}")

        threads = [threading.Thread(target=stream, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        assert first.wait(60)
        time.sleep(0.2)  # every request has reached the server
        proc.send_signal(signal.SIGTERM)
        running = sum(1 for lines in list(results.values()) if not lines or lines[-1] != "data: [DONE]")
        assert wait_for(lambda: _refused(port), 10), "still accepting connections after SIGTERM"
        for t in threads:
            t.join(60)
        assert proc.wait(60) == 0, proc.stderr.read()
        assert running >= 2, "the streams ended before SIGTERM: nothing was drained"
        for i, lines in results.items():
            assert lines[-1] == "data: [DONE]", (i, lines[-3:])
            finish = json.loads(lines[-2].removeprefix("data: "))["choices"][0]["finish_reason"]
            assert finish in {"stop", "length"}, (i, lines[-2])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _up(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _refused(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        try:
            s.connect(("127.0.0.1", port))
        except (ConnectionRefusedError, TimeoutError, OSError):
            return True
    return False
