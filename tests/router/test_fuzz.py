"""Fuzzing: schemathesis against the served /openapi.json, hypothesis on the request schemas.

The server answers every generated request without a 5xx, and its responses match the schema it
publishes (status codes, content types, bodies). The policy parser's fuzzing lives in tests/policies.
"""

from __future__ import annotations

import httpx
import pytest
import schemathesis
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from archrouter.backends.protocol import SamplingParams
from archrouter.backends.sampling import sample
from archrouter.router import schemas
from archrouter.router.settings import Settings
from tests.router.conftest import LiveServer, free_port, policy_text


@pytest.fixture(scope="module")
def fuzzed(model_dir, tmp_path_factory):
    cfg = tmp_path_factory.mktemp("fuzz") / "policy.yaml"
    cfg.write_text(policy_text(model_dir, name="fuzz"))
    # a small max_tokens cap keeps generated (valid) requests fast; no keys: the anonymous caller is admin
    s = Settings(host="127.0.0.1", port=free_port(), policy=str(cfg), log_format="json", redis_url=None,
                 watch_policy=False, max_tokens_cap=4, max_body_bytes=64 * 1024)
    with LiveServer(s) as live:
        yield live


# positive_data_acceptance is left out on purpose: limits that depend on configuration (the max_tokens
# cap, a backend's context length, the message count) and control characters are checked by the
# server, not expressible in the static schema, so schema-valid data may rightly get a 400.
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance, negative_data_rejection]
OPERATIONS = [("POST", "/v1/chat/completions"), ("POST", "/v1/completions"), ("POST", "/v1/route"),
              ("GET", "/v1/models"), ("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics"),
              ("POST", "/admin/policy/reload"), ("GET", "/admin/policy"), ("PUT", "/admin/policy")]


@pytest.fixture(scope="module")
def api_schema(fuzzed):
    return schemathesis.openapi.from_url(fuzzed.url + "/openapi.json")


def test_every_operation_is_fuzzed(api_schema):
    served = {(op.ok().method.upper(), op.ok().path) for op in api_schema.get_all_operations()}
    assert served == set(OPERATIONS)


# schemathesis' own pytest plugin does not run under pytest 9 yet, so its strategies are driven here
@pytest.mark.parametrize(("method", "path", "mode"), [
    *[(m, p, GenerationMode.POSITIVE) for m, p in OPERATIONS],
    # invalid data can only be made where there is a body to break
    *[(m, p, GenerationMode.NEGATIVE) for m, p in OPERATIONS[:3]],
])
def test_openapi_conformance(api_schema, method, path, mode):
    op = api_schema.find_operation_by_path(method, path)

    @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(case=op.as_strategy(generation_mode=mode), model=st.sampled_from([None, "auto", "tiny"]))
    def run(case, model):
        # else nearly every generated name is an unknown model (404); not on negative cases, where the
        # model may be the part made invalid and overwriting it would send a valid request
        if model and mode == GenerationMode.POSITIVE and isinstance(case.body, dict) and "model" in case.body:
            case.body["model"] = model
        case.call_and_validate(checks=CHECKS)

    run()


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
WORDS = st.text(st.characters(codec="utf-8", exclude_categories=("Cc", "Cs")), min_size=1, max_size=30)
MODEL = st.sampled_from(["auto", "tiny", "small"])
SAMPLING = {  # valid values of every sampling field
    "temperature": st.floats(0, 2), "top_p": st.floats(0.01, 1), "top_k": st.integers(0, 50),
    "stop": WORDS | st.lists(WORDS, max_size=4), "stream": st.booleans(),
    "stream_options": st.fixed_dictionaries({}, optional={"include_usage": st.booleans()}),
    "seed": st.integers(0, 2**31), "user": WORDS, "max_tokens": st.integers(1, 4),
    "metadata": st.dictionaries(WORDS, WORDS, max_size=3),
}
SAMPLING.update({  # the OpenAI fields SDK clients send, and vLLM's extensions
    "n": st.integers(1, 3), "presence_penalty": st.floats(-2, 2), "frequency_penalty": st.floats(-2, 2),
    "repetition_penalty": st.floats(0.5, 2), "min_p": st.floats(0, 1),
    "logit_bias": st.dictionaries(st.integers(0, 300).map(str), st.floats(-100, 100), max_size=3),
    "response_format": st.sampled_from([{"type": "text"}, {"type": "json_object"}, {"type": "json_schema",
                                        "json_schema": {"name": "x", "schema": {"type": "object", "properties": {
                                            "a": {"type": "integer"}}, "required": ["a"]}}}]),
})
CHAT_ONLY = {"logprobs": st.booleans(), "top_logprobs": st.integers(0, 5)}  # top_logprobs alone: a 400
COMPLETION_ONLY = {"logprobs": st.integers(0, 5)}
MESSAGE = st.fixed_dictionaries({
    "role": st.sampled_from(["system", "developer", "user"]),
    "content": WORDS | st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": WORDS}), min_size=1,
                                max_size=2)})
VALID_CHAT = st.fixed_dictionaries({"model": MODEL, "messages": st.lists(MESSAGE, min_size=1, max_size=3)},
                                   optional={**SAMPLING, **CHAT_ONLY})
VALID_COMPLETION = st.fixed_dictionaries({"model": MODEL, "prompt": WORDS | st.lists(WORDS, min_size=1, max_size=3)},
                                         optional={**SAMPLING, **COMPLETION_ONLY})
FIELDS = ["model", "messages", "prompt", *SAMPLING, "max_completion_tokens", "echo", "logprobs", "top_logprobs",
          "tools", "audio", "unknown_field"]


def _mutated(valid: st.SearchStrategy) -> st.SearchStrategy:
    """A valid body with one field set to any JSON value (or removed): validation at every depth."""
    def mutate(args):
        body, field, value, drop = args
        body = dict(body)
        if drop:
            body.pop(field, None)
        else:
            body[field] = value
        return body

    return st.tuples(valid, st.sampled_from(FIELDS), JSON, st.booleans()).map(mutate)


CHAT = VALID_CHAT | _mutated(VALID_CHAT)
COMPLETION = VALID_COMPLETION | _mutated(VALID_COMPLETION)


@settings(max_examples=300, deadline=None)
@given(body=CHAT | COMPLETION | JSON)
def test_request_schemas_raise_only_validation_errors(body):
    for model in (schemas.ChatCompletionRequest, schemas.CompletionRequest):
        try:
            req = model.model_validate(body)
        except ValidationError:
            continue
        assert req.limit() >= 1 and len(req.stops()) <= 4


def _check(r: httpx.Response) -> None:
    assert r.status_code < 500, r.text
    if r.status_code >= 400:
        err = r.json()["error"]
        assert set(err) == {"message", "type", "param", "code"} and err["message"]
    elif r.headers["content-type"].startswith("text/event-stream"):
        assert r.text.rstrip().endswith("data: [DONE]")
    else:
        out = r.json()
        assert out["choices"] if "choices" in out else out["backend"] in {"tiny", "small"}


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=CHAT | JSON, path=st.sampled_from(["/v1/chat/completions", "/v1/route"]))
def test_random_chat_bodies_never_5xx(fuzzed, body, path):
    _check(httpx.post(fuzzed.url + path, json=body, timeout=30))


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=COMPLETION | JSON)
def test_random_completion_bodies_never_5xx(fuzzed, body):
    _check(httpx.post(fuzzed.url + "/v1/completions", json=body, timeout=30))


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(raw=st.binary(max_size=200), ctype=st.sampled_from(["application/json", "text/plain", "application/yaml",
                                                            None]),
       path=st.sampled_from(["/v1/chat/completions", "/v1/completions", "/admin/policy"]))
def test_random_bytes_never_5xx(fuzzed, raw, ctype, path):
    headers = {"content-type": ctype} if ctype else {}
    method = "PUT" if path == "/admin/policy" else "POST"
    r = httpx.request(method, fuzzed.url + path, content=raw, headers=headers, timeout=30)
    assert r.status_code < 500, r.text
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}



@settings(max_examples=200, deadline=None)
@given(temperature=st.floats(0, 2), top_p=st.floats(0, 1, exclude_min=True), top_k=st.integers(0, 40),
       scale=st.sampled_from([1.0, 1e4, 1e30]), seed=st.integers(0, 2**31))
def test_sampling_any_valid_parameters_gives_a_token(temperature, top_p, top_k, scale, seed):
    # found by the fuzzing above: temperature=1e-300 overflowed the logits and torch.multinomial raised,
    # which the router saw as a failing backend (503, and a step towards cooldown)
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(32, generator=gen) * scale
    token = sample(logits, SamplingParams(temperature=temperature, top_p=top_p, top_k=top_k), gen)
    assert 0 <= token < 32
    if temperature < 1e-30 and scale >= 1.0:  # so sharp that only the best token can be drawn
        assert token == int(torch.argmax(logits))
