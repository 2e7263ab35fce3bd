"""Two router processes' worth of state sharing one policy through real Redis (router/policy_sync.py).

Each server has its own copy of the policy file, as replicas on different nodes would: a change to
one copy is validated there and published; the other swaps to it; an invalid change stays put.
"""

from __future__ import annotations

import time
import uuid

import httpx
import pytest
import redis

from archrouter.router.settings import Settings
from tests.conftest import REDIS_URL
from tests.router.conftest import LiveServer, free_port, policy_text


def _policy(url: str) -> str:
    return httpx.post(url + "/v1/route", timeout=30,
                      json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]}).json()["policy"]


def _wait(pred, timeout: float = 15.0) -> bool:
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(0.1)
    return False


@pytest.fixture(scope="module")
def pair(model_dir, tmp_path_factory):
    ns = f"archrouter:test:{uuid.uuid4().hex}"
    files = []
    for i in range(2):
        f = tmp_path_factory.mktemp(f"sync{i}") / "policy.yaml"
        f.write_text(policy_text(model_dir, name="first"))
        files.append(f)
    common = dict(host="127.0.0.1", log_format="json", redis_url=REDIS_URL, policy_sync=True,
                  policy_channel=f"{ns}:policy", policy_key=f"{ns}:key", decision_stream=f"{ns}:decisions")
    with LiveServer(Settings(port=free_port(), policy=str(files[0]), **common)) as a, \
         LiveServer(Settings(port=free_port(), policy=str(files[1]), watch_policy=False, **common)) as b:
        yield a, b, files, ns
    redis.Redis.from_url(REDIS_URL).delete(f"{ns}:key", f"{ns}:decisions")


def test_file_change_on_one_replica_reaches_the_other(pair, model_dir):
    a, b, files, ns = pair
    assert _policy(a.url).startswith("first@") and _policy(a.url) == _policy(b.url)

    files[0].write_text(policy_text(model_dir, name="broken").replace("route: small\n", "route: smal\n", 1))
    assert _wait(lambda: 'archrouter_policy_reloads_total{result="invalid"} 1.0' in httpx.get(a.url + "/metrics").text)
    assert _policy(a.url).startswith("first@") and _policy(b.url).startswith("first@")  # published nowhere

    files[0].write_text(policy_text(model_dir, name="second", default="small"))
    assert _wait(lambda: _policy(b.url).startswith("second@")), _policy(b.url)
    assert _policy(a.url) == _policy(b.url)
    # b serves a's text (its own file is unchanged) and the key holds it for replicas that start later
    assert httpx.get(b.url + "/v1/models").json()["data"][0]["policy"].startswith("second@")
    assert "name: second" in redis.Redis.from_url(REDIS_URL).get(f"{ns}:key").decode()
    assert "name: first" in files[1].read_text()


def test_a_replica_starting_later_takes_the_current_version(pair, model_dir, tmp_path):
    a, _, _, ns = pair
    current = _policy(a.url)
    f = tmp_path / "policy.yaml"
    f.write_text(policy_text(model_dir, name="stale"))
    settings = Settings(host="127.0.0.1", port=free_port(), policy=str(f), log_format="json", redis_url=REDIS_URL,
                        policy_sync=True, policy_channel=f"{ns}:policy", policy_key=f"{ns}:key", watch_policy=False)
    with LiveServer(settings) as c:
        assert _policy(c.url) == current
