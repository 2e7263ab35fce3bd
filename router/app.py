"""The HTTP service: OpenAI-compatible completions, routing, models, health and metrics."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from backends.protocol import GenerationRequest, SamplingParams
from router import errors, schemas
from router.decision_log import DecisionLog
from router.dispatch import Opened, open_stream
from router.errors import APIError
from router.logging import configure as configure_logging
from router.metrics import Metrics
from router.policy_holder import PolicyHolder
from router.pool import BackendPool, ClientFactory
from router.settings import Settings

log = structlog.get_logger("archrouter")


class Router:
    """Everything a request needs, built once per app."""

    def __init__(self, settings: Settings, factory: ClientFactory):
        self.settings = settings
        self.metrics = Metrics()
        self.pool = BackendPool(factory)
        self.policies = PolicyHolder(settings.policy, self.pool, self.metrics)
        self.decisions = DecisionLog(
            self.metrics, settings.redis_url, settings.decision_stream, settings.decision_stream_maxlen
        )

    @property
    def policy(self):
        return self.policies.policy

    def decide(self, body: schemas.ChatCompletionRequest | schemas.CompletionRequest):
        policy = self.policy
        if body.model != "auto" and body.model not in policy.backends:
            raise APIError(
                404,
                f"The model '{body.model}' does not exist; use 'auto' or one of: {', '.join(policy.backends)}",
                param="model",
                code="model_not_found",
            )
        t0 = time.perf_counter()
        messages = body.message_dicts() if isinstance(body, schemas.ChatCompletionRequest) else None
        prompt = body.prompt if isinstance(body, schemas.CompletionRequest) else None
        features = policy.features(
            messages=messages, prompt=prompt, max_tokens=body.limit(), metadata=body.metadata or {},
            session_id=body.user,
        )
        decision = policy.decide(features, pinned=None if body.model == "auto" else body.model)
        elapsed = time.perf_counter() - t0
        self.metrics.decision.observe(elapsed)
        return features, decision, elapsed


def create_app(settings: Settings | None = None, factory: ClientFactory | None = None) -> FastAPI:
    settings = settings or Settings()
    if factory is None:
        from router.embedded import embedded_factory

        factory = embedded_factory(settings.device)
    router = Router(settings, factory)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        configure_logging(settings.log_format)
        await router.policies.load_initial()
        if settings.watch_policy:
            router.policies.start_watching()
        log.info("serving", policy=router.policy.id, backends=list(router.pool.clients))
        yield
        await router.policies.stop()
        await router.pool.close()
        await router.decisions.close()

    app = FastAPI(title="archrouter", version="0.1.0", lifespan=lifespan)
    app.state.router = router
    errors.install(app)

    @app.middleware("http")
    async def request_id(request: Request, call_next):
        rid = request.headers.get("x-request-id") or schemas.new_id("req")
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=rid)
        response = await call_next(request)
        response.headers["x-request-id"] = rid
        if response.status_code >= 400:
            router.metrics.errors.labels(status=str(response.status_code), code="").inc()
        return response

    @app.post("/v1/chat/completions")
    async def chat_completions(body: schemas.ChatCompletionRequest, request: Request) -> Response:
        return await _complete(router, body, request, chat=True)

    @app.post("/v1/completions")
    async def completions(body: schemas.CompletionRequest, request: Request) -> Response:
        return await _complete(router, body, request, chat=False)

    @app.post("/v1/route")
    async def route(body: schemas.ChatCompletionRequest) -> dict[str, Any]:
        features, decision, elapsed = router.decide(body)
        return {
            "backend": decision.backend,
            "rule": decision.rule,
            "reason": decision.reason,
            "fallbacks": decision.fallbacks,
            "policy": decision.policy,
            "features": {
                "prompt_tokens": features.prompt_tokens,
                "max_tokens": features.max_tokens,
                "task": features.task,
                "task_probs": features.task_probs,
                "state_tracking": features.state_tracking,
                "turns": features.turns,
                "metadata": features.metadata,
            },
            "estimates": {k: vars(v) for k, v in decision.estimates.items()},
            "trace": [vars(t) for t in decision.trace],
            "decision_ms": round(elapsed * 1000, 4),
        }

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        data = [{"id": "auto", "object": "model", "created": 0, "owned_by": "archrouter",
                 "family": "router", "policy": router.policy.id}]
        for name, client in router.pool.clients.items():
            info = client.info
            data.append({
                "id": name, "object": "model", "created": 0, "owned_by": "archrouter",
                "family": info.family, "context_length": info.context_length,
                "trained": info.trained, "weights": "trained" if info.trained else "random",
                "parameters": info.parameters, "checkpoint": info.checkpoint,
            })
        return {"object": "list", "data": data}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        backends = {name: await c.ready() for name, c in router.pool.clients.items()}
        ok = router.policy is not None and all(backends.values())
        body = {"status": "ready" if ok else "not_ready", "policy": router.policy.id if router.policy else None,
                "backends": backends}
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(router.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


async def _complete(router: Router, body, request: Request, *, chat: bool) -> Response:
    t0 = time.perf_counter()
    rid = schemas.new_id("chatcmpl" if chat else "cmpl")
    features, decision, decision_s = router.decide(body)
    gen_request = GenerationRequest(
        request_id=rid,
        sampling=SamplingParams(
            temperature=body.temperature, top_p=body.top_p, top_k=body.top_k, max_tokens=body.limit(),
            stop=body.stops(), seed=body.seed,
        ),
        messages=body.message_dicts() if chat else None,
        prompt=None if chat else body.prompt,
    )
    record: dict[str, Any] = {
        "request_id": rid, "endpoint": "chat" if chat else "completions", "model": body.model,
        "policy": decision.policy, "features": features.to_dict(), "decision": decision.to_dict(),
        "decision_ms": round(decision_s * 1000, 4),
    }
    candidates = [decision.backend, *decision.fallbacks]
    try:
        opened = await open_stream(router.pool, candidates, gen_request)
    except APIError as exc:
        record.update(status=exc.status, error=exc.message, fallbacks_tried=candidates)
        router.metrics.requests.labels(record["endpoint"], "none", decision.rule, str(exc.status)).inc()
        await router.decisions.record(record)
        raise
    ttft = time.perf_counter() - t0
    router.metrics.ttft.labels(opened.backend).observe(ttft)
    if opened.backend != decision.backend:
        router.metrics.fallbacks.labels(decision.backend, opened.backend).inc()
    record.update(backend=opened.backend, fallbacks_used=[n for n, _ in opened.failed], ttft_ms=ttft * 1000)
    headers = {
        "x-archrouter-backend": opened.backend,
        "x-archrouter-rule": decision.rule if opened.backend == decision.backend else f"{decision.rule}+fallback",
        "x-archrouter-policy": decision.policy,
    }

    async def finish(last, status: str = "200") -> None:
        elapsed = time.perf_counter() - t0
        m = router.metrics
        m.requests.labels(record["endpoint"], opened.backend, decision.rule, status).inc()
        if last is not None:
            m.tokens.labels(opened.backend, "prompt").inc(last.prompt_tokens)
            m.tokens.labels(opened.backend, "completion").inc(last.completion_tokens)
            record.update(prompt_tokens=last.prompt_tokens, completion_tokens=last.completion_tokens,
                          finish_reason=last.finish_reason)
        m.latency.labels(opened.backend, decision.rule).observe(elapsed)
        record.update(status=int(status) if status.isdigit() else status, latency_ms=elapsed * 1000)
        await router.decisions.record(record)

    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(
            _sse(opened, rid, chat, include_usage, finish), media_type="text/event-stream", headers=headers
        )
    text, last = opened.first.text, opened.first
    try:
        async for chunk in opened.rest:
            text += chunk.text
            last = chunk
    except Exception as exc:
        await finish(last, "500")
        raise APIError(500, f"backend {opened.backend!r} failed mid-generation: {exc}", type="server_error",
                       code="backend_error") from exc
    await finish(last)
    usage = _usage(last)
    body_out = (schemas.chat_response if chat else schemas.completion_response)(
        rid, opened.backend, text, last.finish_reason or "stop", usage
    )
    return JSONResponse(body_out, headers=headers)


def _usage(chunk) -> schemas.Usage:
    return schemas.Usage(prompt_tokens=chunk.prompt_tokens, completion_tokens=chunk.completion_tokens,
                         total_tokens=chunk.prompt_tokens + chunk.completion_tokens)


async def _sse(opened: Opened, rid: str, chat: bool, include_usage: bool, finish) -> AsyncIterator[str]:
    def event(obj: dict) -> str:
        return f"data: {json.dumps(obj)}\n\n"

    model, last, status = opened.backend, None, "200"
    try:
        if chat:
            yield event(schemas.chat_chunk(rid, model, {"role": "assistant", "content": ""}, None))
        chunk = opened.first
        while True:
            last = chunk
            if chunk.text or chunk.finish_reason:
                yield event(
                    schemas.chat_chunk(rid, model, {"content": chunk.text} if chunk.text else {}, chunk.finish_reason)
                    if chat else schemas.completion_chunk(rid, model, chunk.text, chunk.finish_reason)
                )
            if chunk.finish_reason:
                break
            chunk = await anext(opened.rest)
        if include_usage:
            usage = _usage(last)
            yield event(schemas.chat_chunk(rid, model, {}, None, usage) if chat
                        else schemas.completion_chunk(rid, model, "", None, usage))
        yield "data: [DONE]\n\n"
    except Exception as exc:  # once streaming, an error ends the stream with an error event
        status = "500"
        log.exception("stream_failed", backend=model)
        err = APIError(500, f"backend {model!r} failed mid-stream: {exc}", type="server_error", code="backend_error")
        yield event(err.body())
        yield "data: [DONE]\n\n"
    finally:
        if status == "200" and (last is None or not last.finish_reason):
            status = "499"  # the client went away before the end
        await opened.rest.aclose()
        await finish(last, status)
