"""The exact response cache against the real Redis, a real server and the official openai client."""

from __future__ import annotations

import json
import uuid

import httpx
import openai
import pytest
import redis

from archrouter.router.settings import Settings
from tests.conftest import REDIS_URL
from tests.router.conftest import LiveServer, free_port, policy_text
from tests.router.faults import redis_ping
from tests.router.test_reliability import metric

pytestmark = pytest.mark.skipif(not redis_ping(REDIS_URL), reason="needs the environment's Redis")


@pytest.fixture(scope="module")
def cached(model_dir, tmp_path_factory):
    cfg = tmp_path_factory.mktemp("rcache") / "policy.yaml"
    cfg.write_text(policy_text(model_dir))
    prefix = f"archrouter:test:rcache:{uuid.uuid4().hex}"
    # room for one short answer (about 350 bytes): the next evicts it
    settings = Settings(host="127.0.0.1", port=free_port(), policy=str(cfg), log_format="json", redis_url=REDIS_URL,
                        watch_policy=False, response_cache=True, response_cache_ttl_s=60,
                        response_cache_max_bytes=600, response_cache_prefix=prefix,
                        decision_stream=f"{prefix}:decisions")
    with LiveServer(settings) as live:
        live.prefix = prefix
        yield live
    r = redis.Redis.from_url(REDIS_URL)
    for k in r.scan_iter(f"{prefix}:*"):
        r.delete(k)


def ask(live, content: str, **kw):
    client = openai.OpenAI(base_url=live.url + "/v1", api_key="unused", max_retries=0)
    args = {"model": "auto", "messages": [{"role": "user", "content": content}], "max_tokens": 6, "temperature": 0}
    return client.chat.completions.with_raw_response.create(**{**args, **kw})


def test_same_request_is_answered_from_redis(cached) -> None:
    first = ask(cached, "hello cache")
    second = ask(cached, "hello cache")
    assert first.headers["x-archrouter-cache"] == "miss" and second.headers["x-archrouter-cache"] == "hit"
    a, b = first.parse(), second.parse()
    assert a.choices[0].message.content == b.choices[0].message.content and a.usage == b.usage
    assert a.id != b.id and second.headers["x-archrouter-backend"] == first.headers["x-archrouter-backend"]
    text = httpx.get(cached.url + "/metrics").text
    assert metric(text, "archrouter_response_cache_total", result="hit") >= 1
    assert metric(text, "archrouter_response_cache_total", result="store") >= 1
    assert metric(text, "archrouter_response_cache_bytes") > 0


def test_other_parameters_and_sampled_requests_miss(cached) -> None:
    ask(cached, "hello params")
    assert ask(cached, "hello params", user="someone").headers["x-archrouter-cache"] == "hit"  # user is ignored
    assert ask(cached, "hello params", max_tokens=5).headers["x-archrouter-cache"] == "miss"
    assert ask(cached, "hello params", stop=["zz"]).headers["x-archrouter-cache"] == "miss"
    sampled = ask(cached, "hello params", temperature=0.7)
    assert "x-archrouter-cache" not in sampled.headers  # not cacheable at all


def test_byte_cap_evicts_the_oldest_and_entries_carry_the_ttl(cached) -> None:
    r = redis.Redis.from_url(REDIS_URL)
    for i in range(4):
        ask(cached, f"fill {i}")
    assert int(r.get(f"{cached.prefix}:bytes")) <= 600
    # newest kept, checked first: the miss below stores its own answer, which evicts this one in turn
    assert ask(cached, "fill 3").headers["x-archrouter-cache"] == "hit"
    assert ask(cached, "fill 0").headers["x-archrouter-cache"] == "miss"  # evicted first
    key = r.zrange(f"{cached.prefix}:index", -1, -1)[0].decode()
    assert 0 < r.ttl(f"{cached.prefix}:r:{key}") <= 60
    text = httpx.get(cached.url + "/metrics").text
    assert metric(text, "archrouter_response_cache_total", result="evicted") >= 1


def live_rows(live, rid: str) -> list[dict]:
    """The dashboard's live stream (SSE) until the row of `rid` arrives."""
    rows: list[dict] = []
    with httpx.Client(base_url=live.url, timeout=30) as c, c.stream("GET", "/dashboard/api/decisions/stream") as st:
        for line in st.iter_lines():
            if line.startswith("data: "):
                rows.append(json.loads(line[6:]))
                if rows[-1].get("request_id") == rid:
                    break
    return rows


def test_dashboard_live_view_shows_cache_hits(cached) -> None:
    ask(cached, "hello dashboard")
    rid = ask(cached, "hello dashboard").parse().id
    row = [r for r in live_rows(cached, rid) if r.get("request_id") == rid][0]
    assert row["cache"] == "hit" and row["status"] == 200


def test_off_by_default(server, http) -> None:
    assert Settings().response_cache is False
    r = http.post("/v1/chat/completions", json={"model": "auto", "temperature": 0, "max_tokens": 3,
                                                "messages": [{"role": "user", "content": "hello"}]})
    assert r.status_code == 200 and "x-archrouter-cache" not in r.headers
