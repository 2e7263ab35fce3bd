"""Hot reload of the policy file, and the decision log's Redis stream (real Redis)."""

from __future__ import annotations

import json
import time
import uuid

import httpx
import pytest
import redis

from archrouter.router.settings import Settings
from tests.conftest import REDIS_URL
from tests.router.conftest import LiveServer, free_port, policy_text


@pytest.fixture(scope="module")
def live(model_dir, tmp_path_factory):
    cfg = tmp_path_factory.mktemp("reload") / "policy.yaml"
    cfg.write_text(policy_text(model_dir, name="first"))
    stream = f"archrouter:test:{uuid.uuid4().hex}"
    settings = Settings(host="127.0.0.1", port=free_port(), policy=str(cfg), log_format="json",
                        redis_url=REDIS_URL, decision_stream=stream)
    with LiveServer(settings) as srv:
        srv.policy_file, srv.stream = cfg, stream
        yield srv
    redis.Redis.from_url(REDIS_URL).delete(stream)


def _policy_id(client: httpx.Client) -> str:
    return client.post("/v1/route", json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]}).json()[
        "policy"]


def _wait_for(pred, timeout: float = 15.0) -> bool:
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(0.1)
    return False


def test_valid_change_swaps_and_invalid_is_kept_out(live, model_dir):
    with httpx.Client(base_url=live.url, timeout=30) as c:
        assert _policy_id(c).startswith("first@")
        live.policy_file.write_text(policy_text(model_dir, name="second", default="small"))
        assert _wait_for(lambda: _policy_id(c).startswith("second@")), "valid policy was not picked up"
        r = c.post("/v1/route", json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]}).json()
        assert r["rule"] == "default" and r["backend"] == "small"

        # an unknown backend in a rule: rejected, old one keeps serving, the failure is counted
        bad = policy_text(model_dir, name="third").replace("route: small\n", "route: smal\n", 1)
        live.policy_file.write_text(bad)
        assert _wait_for(lambda: 'archrouter_policy_reloads_total{result="invalid"} 1.0' in c.get("/metrics").text)
        assert _policy_id(c).startswith("second@")
        still = c.post("/v1/completions", json={"model": "auto", "prompt": "still up", "max_tokens": 2})
        assert still.status_code == 200


def test_decisions_reach_the_redis_stream(live):
    with httpx.Client(base_url=live.url, timeout=30) as c:
        r = c.post("/v1/chat/completions", json={
            "model": "auto", "messages": [{"role": "user", "content": "log me"}], "max_tokens": 3})
        assert r.status_code == 200
        rid = r.json()["id"]
    rds = redis.Redis.from_url(REDIS_URL)

    def found():
        return [json.loads(f[b"record"]) for _, f in rds.xrange(live.stream) if json.loads(f[b"record"])[
            "request_id"] == rid]

    assert _wait_for(lambda: bool(found()), 5)
    rec = found()[0]
    assert rec["backend"] == r.headers["x-archrouter-backend"]
    assert rec["decision"]["rule"] == r.headers["x-archrouter-rule"]
    assert rec["features"]["prompt_tokens"] > 0 and rec["completion_tokens"] >= 1
    assert rec["policy"].startswith(("first@", "second@"))
