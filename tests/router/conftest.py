"""A real server on loopback: tiny random Transformer checkpoints, the shipped classifier, uvicorn."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn

from archrouter.backends.families import init_random
from archrouter.router.app import create_app
from archrouter.router.settings import Settings
from tests.conftest import CLASSIFIER


def policy_text(models: Path, *, default: str = "tiny", name: str = "test", extra_rule: str = "") -> str:
    return f"""
name: {name}
classifier: {CLASSIFIER}
backends:
  - name: tiny
    family: transformer
    checkpoint: {models / "tiny"}
    context_length: 512
    cost:
      prefill_ms: {{base: 1.0, per_token: 0.01, per_token_sq: 0.00001}}
      decode_ms: {{base: 2.0, per_context: 0.001}}
      price_per_1m_input: 0.1
      price_per_1m_output: 0.4
  - name: small
    family: transformer
    checkpoint: {models / "small"}
    context_length: 1024
    cost:
      prefill_ms: {{base: 2.0, per_token: 0.02, per_token_sq: 0.00002}}
      decode_ms: {{base: 4.0, per_context: 0.002}}
      price_per_1m_input: 0.2
      price_per_1m_output: 0.8
rules:
{extra_rule}
  - name: long-prompt
    when: {{prompt_tokens: {{gt: 300}}}}
    route: small
    fallbacks: [tiny]
  - name: recall-to-small
    when: {{task: recall}}
    route: small
default: {{route: {default}, fallbacks: [small]}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    def __init__(self, settings: Settings, factory=None):
        self.app = create_app(settings, factory=factory)
        self.url = f"http://{settings.host}:{settings.port}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, host=settings.host, port=settings.port,
                                                    log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.time() + 60
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

    @property
    def router(self):
        return self.app.state.router


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("models")
    init_random("transformer", "tiny", root / "tiny", seed=1)
    init_random("transformer", "tiny", root / "small", seed=2)
    return root


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    cfg = tmp_path_factory.mktemp("cfg") / "policy.yaml"
    cfg.write_text(policy_text(model_dir))
    settings = Settings(host="127.0.0.1", port=free_port(), policy=str(cfg), log_format="json",
                        redis_url=None)
    with LiveServer(settings) as live:
        live.policy_file = cfg
        yield live


@pytest.fixture()
def http(server):
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c
