"""The router over continuous-batching engines, through the official openai client on loopback:
concurrent streams, a client closing its stream, a full queue (429 or fallback), a queue timeout (503)."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import openai
import pytest
import uvicorn

from archrouter.backends.engine import Engine, EngineConfig
from archrouter.router.app import create_app
from archrouter.router.settings import Settings
from tests.conftest import CLASSIFIER
from tests.router.conftest import LiveServer, free_port, policy_text

pytestmark = pytest.mark.skipif(not CLASSIFIER.exists(), reason="the shipped task classifier has not landed")


class EngineServer(LiveServer):
    """LiveServer whose backends are engines with the given settings."""

    def __init__(self, settings: Settings, engine: EngineConfig):
        def build(name: str, spec) -> Engine:
            return Engine.from_checkpoint(name, spec.family, spec.checkpoint, context_length=spec.context_length,
                                          config=engine)

        self.app = create_app(settings, build)
        self.url = f"http://{settings.host}:{settings.port}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, host=settings.host, port=settings.port,
                                                    log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)


def start(model_dir, tmp_path_factory, extra_rule: str = "", **engine) -> EngineServer:
    cfg = tmp_path_factory.mktemp("cfg") / "policy.yaml"
    cfg.write_text(policy_text(model_dir, extra_rule=extra_rule))
    settings = Settings(host="127.0.0.1", port=free_port(), policy=str(cfg), log_format="json", redis_url=None,
                        watch_policy=False)
    return EngineServer(settings, EngineConfig(redis_url=None, **engine))


@pytest.fixture(scope="module")
def busy_server(model_dir, tmp_path_factory):
    with start(model_dir, tmp_path_factory, max_num_seqs=8) as live:
        yield live


@pytest.fixture(scope="module")
def tight_server(model_dir, tmp_path_factory):
    # one seat and no waiting room: a second request at the same backend is refused at once
    with start(model_dir, tmp_path_factory, max_num_seqs=1, max_waiting=0) as live:
        yield live


@pytest.fixture(scope="module")
def slow_queue_server(model_dir, tmp_path_factory):
    with start(model_dir, tmp_path_factory, max_num_seqs=1, max_waiting=4, queue_timeout_s=0.3) as live:
        yield live


@pytest.fixture(scope="module")
def queueing_server(model_dir, tmp_path_factory):
    rule = "  - name: tiny-busy\n    when: {queue_depth.tiny: {gt: 0}}\n    route: small"
    with start(model_dir, tmp_path_factory, extra_rule=rule, max_num_seqs=1, max_waiting=4) as live:
        yield live


def client(live, **kw) -> openai.OpenAI:
    return openai.OpenAI(base_url=live.url + "/v1", api_key="unused", max_retries=0, **kw)


def wait_until(cond, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


PROMPTS = ["hello there", "what is two plus two", "tell me a story", "abc", "one more", "the last one"]


async def test_concurrent_streams_match_requests_made_alone(busy_server):
    ac = openai.AsyncOpenAI(base_url=busy_server.url + "/v1", api_key="unused", max_retries=0)

    async def stream(prompt: str) -> str:
        out = await ac.chat.completions.create(model="tiny", messages=[{"role": "user", "content": prompt}],
                                               max_tokens=16, temperature=0, stream=True)
        return "".join([c.choices[0].delta.content or "" async for c in out if c.choices])

    together = await asyncio.gather(*(stream(p) for p in PROMPTS))
    steps_together = busy_server.router.engine_stats()["tiny"]["steps"]
    alone = []
    for p in PROMPTS:
        r = await ac.chat.completions.create(model="tiny", messages=[{"role": "user", "content": p}],
                                             max_tokens=16, temperature=0)
        alone.append(r.choices[0].message.content)
    assert together == alone
    # six streams of up to 16 tokens shared steps: run one after another they need >= 6 * 16 / 2
    assert steps_together < 6 * 16 / 2
    await ac.close()


def test_client_closing_a_stream_frees_its_slot(busy_server):
    stats = lambda: busy_server.router.engine_stats()["tiny"]  # noqa: E731
    before = stats()["cancelled"]
    stream = client(busy_server).chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "go on forever"}], max_tokens=450, temperature=0,
        stream=True)
    got = 0
    for chunk in stream:
        got += bool(chunk.choices and chunk.choices[0].delta.content)
        if got >= 3:
            break
    assert stats()["running"] == 1
    stream.close()  # the client goes away mid-answer
    wait_until(lambda: stats()["running"] == 0)
    assert stats()["cancelled"] == before + 1
    assert stats()["completion_tokens"] < 450
    metrics = httpx.get(busy_server.url + "/metrics").text
    assert f'archrouter_engine_cancelled_total{{backend="tiny"}} {before + 1}.0' in metrics
    assert 'archrouter_engine_waiting{backend="tiny"} 0.0' in metrics


def test_full_backend_answers_429_with_retry_after_or_uses_the_fallback(tight_server):
    c = client(tight_server)
    occupying = c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hold the seat"}],
                                          max_tokens=450, temperature=0, stream=True)
    next(iter(occupying))
    try:
        with pytest.raises(openai.RateLimitError) as err:
            c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
        assert err.value.response.headers["retry-after"] == "1"
        assert err.value.body["code"] == "backend_overloaded"
        # model "auto": the policy's default (tiny) is full, its fallback (small) answers
        raw = c.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
        assert raw.headers["x-archrouter-backend"] == "small"
        assert raw.headers["x-archrouter-fallback-from"] == "tiny"
        assert tight_server.router.engine_stats()["tiny"]["rejected"] == 2
    finally:
        occupying.close()


def test_request_waiting_past_the_queue_timeout_gets_503(slow_queue_server):
    c = client(slow_queue_server)
    occupying = c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hold the seat"}],
                                          max_tokens=450, temperature=0, stream=True)
    next(iter(occupying))
    try:
        with pytest.raises(openai.InternalServerError) as err:
            c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
        assert err.value.status_code == 503 and "queue" in err.value.message
        assert slow_queue_server.router.engine_stats()["tiny"]["timed_out"] == 1
    finally:
        occupying.close()


def test_policy_sees_the_engine_queue_depth(queueing_server):
    c = client(queueing_server, timeout=60)
    hi = [{"role": "user", "content": "hi"}]
    raw = c.chat.completions.with_raw_response.create(model="auto", messages=hi, max_tokens=2)
    assert raw.headers["x-archrouter-backend"] == "tiny"  # nothing queued: the default route
    occupying = c.chat.completions.create(model="tiny", messages=hi, max_tokens=450, temperature=0, stream=True)
    next(iter(occupying))
    queued = threading.Thread(target=lambda: client(queueing_server, timeout=60).chat.completions.create(
        model="tiny", messages=hi, max_tokens=2))
    queued.start()
    try:
        wait_until(lambda: queueing_server.router.engine_stats()["tiny"]["queue_depth"] == 1)
        raw = c.chat.completions.with_raw_response.create(model="auto", messages=hi, max_tokens=2)
        assert raw.headers["x-archrouter-backend"] == "small"
        assert raw.headers["x-archrouter-rule"] == "tiny-busy"
    finally:
        occupying.close()
        queued.join(timeout=60)
