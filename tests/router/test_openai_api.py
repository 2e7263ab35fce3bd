"""The official openai client against the server on loopback."""

from __future__ import annotations

import json

import openai
import pytest


@pytest.fixture()
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def test_chat_non_stream_auto_routes_and_says_where(client, server):
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "Hello there, how are you?"}], max_tokens=12, seed=7
    )
    resp = raw.parse()
    assert raw.headers["x-archrouter-backend"] in {"tiny", "small"}
    assert raw.headers["x-archrouter-rule"]
    assert raw.headers["x-archrouter-policy"].startswith("test@")
    assert resp.model == raw.headers["x-archrouter-backend"]
    assert resp.choices[0].finish_reason in {"stop", "length"}
    assert resp.usage.completion_tokens >= 1
    assert resp.usage.prompt_tokens > len("Hello there, how are you?")  # template + specials
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens
    assert isinstance(resp.choices[0].message.content, str)


def test_chat_stream_equals_non_stream_greedy(client):
    kwargs = dict(model="tiny", messages=[{"role": "user", "content": "Count: one two"}], max_tokens=20,
                  temperature=0)
    whole = client.chat.completions.create(**kwargs)
    chunks = list(client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kwargs))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [whole.choices[0].finish_reason]
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_completions_stream_and_non_stream(client):
    whole = client.completions.create(model="small", prompt="The cat", max_tokens=10, temperature=0)
    assert whole.object == "text_completion"
    assert whole.choices[0].finish_reason in {"stop", "length"}
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model="small", prompt="The cat", max_tokens=10, temperature=0, stream=True) if c.choices)
    assert streamed == whole.choices[0].text


def test_length_finish_and_usage(client):
    resp = client.completions.create(model="tiny", prompt="abc", max_tokens=3, temperature=0,
                                     extra_body={"top_k": 1})
    # a random tiny model rarely emits an end token in 3 steps; if it does, the reason says so
    assert (resp.choices[0].finish_reason, resp.usage.completion_tokens) in {("length", 3), ("stop", 1),
                                                                            ("stop", 2), ("stop", 3)}


def test_seeded_sampling_is_reproducible(client):
    kw = dict(model="tiny", prompt="seed me", max_tokens=16, temperature=1.0, seed=1234)
    assert client.completions.create(**kw).choices[0].text == client.completions.create(**kw).choices[0].text


def test_unknown_model_is_404_openai_shaped(client):
    with pytest.raises(openai.NotFoundError) as exc:
        client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "hi"}])
    err = exc.value.body
    assert err["code"] == "model_not_found" and err["param"] == "model" and "gpt-9" in err["message"]


def test_malformed_json_is_400(http):
    r = http.post("/v1/chat/completions", content=b'{"model": "auto", "messages": [', headers={
        "content-type": "application/json"})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "invalid_json"


def test_unknown_field_is_named(http):
    r = http.post("/v1/chat/completions", json={"model": "auto", "messages": [{"role": "user", "content": "x"}],
                                                "temprature": 0.5})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["param"] == "temprature" and "temprature" in err["message"]


def test_bad_value_names_the_field(http):
    r = http.post("/v1/chat/completions", json={"model": "auto", "messages": [{"role": "robot", "content": "x"}]})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "messages[0].role"
    r = http.post("/v1/completions", json={"model": "auto", "prompt": "x", "max_tokens": 0})
    assert r.json()["error"]["param"] == "max_tokens"


def test_context_length_exceeded(client):
    with pytest.raises(openai.BadRequestError) as exc:
        client.completions.create(model="tiny", prompt="x" * 600, max_tokens=8)
    assert exc.value.body["code"] == "context_length_exceeded"


def test_models_lists_backends_and_auto(http):
    data = {m["id"]: m for m in http.get("/v1/models").json()["data"]}
    assert set(data) == {"auto", "tiny", "small"}
    assert data["tiny"]["family"] == "transformer"
    assert data["tiny"]["weights"] == "random" and data["tiny"]["trained"] is False
    assert data["small"]["context_length"] == 1024


def test_route_returns_the_decision(http):
    body = {"model": "auto", "messages": [{"role": "user", "content": "word " * 100}], "max_tokens": 64}
    r = http.post("/v1/route", json=body).json()
    assert r["backend"] == "small" and r["rule"] == "long-prompt"
    assert r["fallbacks"] == ["tiny"]
    assert r["features"]["prompt_tokens"] >= 500 and r["features"]["max_tokens"] == 64
    assert set(r["features"]["task_probs"]) == {"chat", "recall", "state_tracking", "long_document",
                                                "sequential_data", "code"}
    assert set(r["estimates"]) == {"tiny", "small"}
    assert r["estimates"]["small"]["latency_ms"] > 0


def test_health_ready_metrics(http, client):
    assert http.get("/healthz").json() == {"status": "ok"}
    ready = http.get("/readyz")
    assert ready.status_code == 200 and ready.json()["backends"] == {"tiny": True, "small": True}
    client.completions.create(model="tiny", prompt="metrics", max_tokens=2)
    text = http.get("/metrics").text
    assert 'archrouter_requests_total{backend="tiny",endpoint="completions",rule="pinned",status="200"}' in text
    assert "archrouter_decision_latency_seconds_bucket" in text
    assert 'archrouter_tokens_total{backend="tiny",kind="completion"}' in text
    assert "archrouter_policy_info{policy=" in text


def test_stream_sse_wire_format(http):
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "stream": True}
    with http.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [ln for ln in r.iter_lines() if ln]
    assert lines[-1] == "data: [DONE]"
    first = json.loads(lines[0].removeprefix("data: "))
    assert first["object"] == "chat.completion.chunk" and first["choices"][0]["delta"]["role"] == "assistant"
