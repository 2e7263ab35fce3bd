"""The HTTP service: OpenAI-compatible completions, routing, models, health, metrics, admin."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import structlog
from fastapi import Depends, FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from archrouter.backends.protocol import GenerationRequest, SamplingParams
from archrouter.router import dashboard, errors, fallback, schemas
from archrouter.router.auth import Principal
from archrouter.router.choices import Choices
from archrouter.router.cooldown import Cooldowns
from archrouter.router.dispatch import Opened, open_stream
from archrouter.router.errors import APIError
from archrouter.router.limits import InputLimits
from archrouter.router.logging import configure as configure_logging
from archrouter.router.policy_sync import PolicySync
from archrouter.router.pool import ClientFactory
from archrouter.router.settings import Settings
from archrouter.router.state import Router
from archrouter.router.structured import grammar_for

log = structlog.get_logger("archrouter")

_ERROR_TEXT = {400: "Invalid request (the error names the field)", 401: "Missing or wrong API key",
               403: "The key may not use this backend or endpoint", 404: "Unknown model or path",
               413: "Request body too large", 422: "Invalid policy", 429: "Rate limit or every backend at capacity",
               500: "A backend failed mid-generation", 503: "No backend could serve the request",
               504: "Generation timed out"}


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI declarations of the OpenAI-shaped errors an endpoint can return."""
    return {c: {"model": schemas.ErrorResponse, "description": _ERROR_TEXT[c]} for c in codes}


def _completion_responses(model: type) -> dict[int | str, dict[str, Any]]:
    return {200: {"model": model, "description": "The completion; with stream=true, server-sent events ending "
                  "in data: [DONE]", "content": {"text/event-stream": {"schema": {"type": "string"}}}},
            **_errors(400, 401, 403, 404, 413, 429, 500, 503, 504)}


# every POST/PUT can meet the input-limits middleware (413, 400) and auth (401)
_REQUEST = (400, 401, 413)


def create_app(settings: Settings | None = None, factory: ClientFactory | None = None) -> FastAPI:
    settings = settings or Settings()
    if factory is None:
        from archrouter.router.embedded import embedded_factory

        factory = embedded_factory(settings.device, redis_url=settings.redis_url)
    router = Router(settings, factory)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        configure_logging(settings.log_format)
        await router.policies.load_initial()
        sync = None
        if settings.redis_url and settings.policy_sync:  # replicas share one policy version through Redis
            sync = PolicySync(settings.redis_url, router.policies, channel=settings.policy_channel,
                              key=settings.policy_key)
            await sync.start()
        router.decisions.start()
        if settings.watch_policy:
            router.policies.start_watching()
        log.info("serving", policy=router.policy.id, backends=list(router.pool.clients),
                 auth="keys" if router.keys.enabled else "none (loopback only)")
        yield
        if sync is not None:
            await sync.stop()
        await router.policies.stop()
        await router.pool.close()
        await router.decisions.close()
        await router.limiter.close()
        if router.response_cache is not None:
            await router.response_cache.close()

    app = FastAPI(title="archrouter", version="0.1.0", lifespan=lifespan)
    app.state.router = router
    errors.install(app)
    app.add_middleware(InputLimits, max_body_bytes=settings.max_body_bytes, max_json_depth=settings.max_json_depth)

    @app.middleware("http")
    async def request_id(request: Request, call_next):
        rid = request.headers.get("x-request-id") or schemas.new_id("req")
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=rid)
        response = await call_next(request)
        if settings.replica:  # on Ray Serve: its proxy already returns x-request-id (the same id)
            response.headers["x-archrouter-replica"] = settings.replica
        else:
            response.headers["x-request-id"] = rid
        if response.status_code >= 400:
            router.metrics.errors.labels(status=str(response.status_code), code="").inc()
        return response

    def principal(request: Request) -> Principal:
        return router.keys.authenticate(request.headers.get("authorization"))

    def admin(p: Principal = Depends(principal)) -> Principal:
        if not p.admin:
            raise APIError(403, "this endpoint needs the admin key", code="admin_required")
        return p

    def openapi() -> dict[str, Any]:
        # validation errors are answered as OpenAI-shaped 400s, never FastAPI's 422 shape: drop it
        if app.openapi_schema is None:
            doc = get_openapi(title=app.title, version=app.version, routes=app.routes)
            for path in doc["paths"].values():
                for op in path.values():
                    if op.get("responses", {}).get("422", {}).get("description") == "Validation Error":
                        del op["responses"]["422"]
            for name in ("HTTPValidationError", "ValidationError"):
                doc.get("components", {}).get("schemas", {}).pop(name, None)
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi

    @app.post("/v1/chat/completions", responses=_completion_responses(schemas.ChatCompletion))
    async def chat_completions(body: schemas.ChatCompletionRequest, p: Principal = Depends(principal)) -> Response:
        return await _complete(router, body, p, chat=True)

    @app.post("/v1/completions", responses=_completion_responses(schemas.Completion))
    async def completions(body: schemas.CompletionRequest, p: Principal = Depends(principal)) -> Response:
        return await _complete(router, body, p, chat=False)

    @app.post("/v1/route", responses=_errors(*_REQUEST, 403, 404))
    async def route(body: schemas.ChatCompletionRequest, p: Principal = Depends(principal)) -> dict[str, Any]:
        features, decision, elapsed = router.decide(body, p)
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
            "expected_accuracy": decision.expected_accuracy,
            "fallback_plan": fallback.plan(decision),
            "decision_ms": round(elapsed * 1000, 4),
        }

    @app.get("/v1/models", responses=_errors(401))
    async def models(p: Principal = Depends(principal)) -> dict[str, Any]:
        data = [{"id": "auto", "object": "model", "created": 0, "owned_by": "archrouter",
                 "family": "router", "policy": router.policy.id}]
        for name, client in router.pool.clients.items():
            if not p.may_use(name):
                continue
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

    @app.get("/readyz", responses={503: {"description": "Not ready (same body)"}})
    async def readyz() -> JSONResponse:
        backends = {name: await c.ready() for name, c in router.pool.clients.items()}
        cooling = router.cooldowns.state()
        ok = router.policy is not None and all(backends.values())
        body = {"status": "ready" if ok else "not_ready", "policy": router.policy.id if router.policy else None,
                "backends": backends, "cooldown": cooling}
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/metrics", response_class=Response, responses={200: {
        "description": "Prometheus text format", "content": {"text/plain": {"schema": {"type": "string"}}}}})
    async def metrics() -> Response:
        router.refresh_gauges()
        return Response(generate_latest(router.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/admin/policy/reload", responses=_errors(*_REQUEST, 403, 422))
    async def reload_policy(_: Principal = Depends(admin)) -> JSONResponse:
        ok, detail = await router.policies.reload()
        return JSONResponse({"reloaded": ok, "policy": router.policy.id, "detail": detail},
                            status_code=200 if ok else 422)

    @app.put("/admin/policy", responses=_errors(*_REQUEST, 403, 422))
    async def put_policy(request: Request, _: Principal = Depends(admin)) -> JSONResponse:
        try:
            text = (await request.body()).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise APIError(400, f"Policy is not valid UTF-8 (byte {exc.start})", param="policy",
                           code="invalid_encoding") from None
        ok, detail = await router.policies.replace(text)
        if not ok:
            raise APIError(422, detail, param="policy", code="invalid_policy")
        return JSONResponse({"policy": router.policy.id})

    @app.get("/admin/policy", response_class=Response, responses={
        200: {"description": "The policy file", "content": {"application/yaml": {"schema": {"type": "object"}}}},
        **_errors(401, 403)})
    async def get_policy(_: Principal = Depends(admin)) -> Response:
        return Response(router.policies.text, media_type="application/yaml")  # in force, maybe from a peer

    app.include_router(dashboard.build(router))
    return app


async def _complete(router: Router, body, principal: Principal, *, chat: bool) -> Response:
    t0 = time.perf_counter()
    rid = schemas.new_id("chatcmpl" if chat else "cmpl")
    router.check_limits(body)
    grammar = grammar_for(body.response_format)  # a schema that does not compile: 400 before routing
    features, decision, decision_s = router.decide(body, principal)
    prompts = [body.message_dicts()] if chat else body.prompt_list()
    count = len(prompts) * body.n
    # every prompt's tokens and every choice's max_tokens are charged up front (features measured the
    # longest prompt: the others are scaled by their length)
    longest = max(len(p) for p in body.prompt_list()) if not chat else 1
    est_prompt = features.prompt_tokens if chat else sum(
        -(-features.prompt_tokens * len(p) // max(1, longest)) for p in body.prompt_list())
    charged = est_prompt + count * features.max_tokens
    verdict = await router.limiter.take(principal.key_id, rpm=principal.rpm, tpm=principal.tpm, tokens=charged)
    if not verdict.allowed:
        router.metrics.rate_limited.labels(principal.name).inc()
        raise APIError(429, f"Rate limit reached for key {principal.name!r} "
                            f"({verdict.rpm} requests/min, {verdict.tpm} tokens/min); retry after "
                            f"{verdict.retry_after_s:.1f}s", type="requests", code="rate_limit_exceeded",
                       headers=verdict.headers())
    cache = router.response_cache
    cache_key = cache.key(decision.policy, decision.backend, body) if cache and cache.cacheable(body) else None
    if cache_key is not None and (hit := await cache.get(cache_key)) is not None:
        return await _from_cache(router, hit, rid, decision, features, principal, charged, verdict, t0, decision_s)
    gen_request = GenerationRequest(
        request_id=rid,
        sampling=SamplingParams(
            temperature=body.temperature, top_p=body.top_p, top_k=body.top_k, max_tokens=body.limit(),
            stop=body.stops(), seed=body.seed, min_p=body.min_p, presence_penalty=body.presence_penalty,
            frequency_penalty=body.frequency_penalty, repetition_penalty=body.repetition_penalty,
            logit_bias=body.token_bias(), logprobs=body.logprobs_k(), grammar=grammar, n=body.n,
        ),
        messages=body.message_dicts() if chat else None,
        prompt=None if chat else (body.prompt if isinstance(body.prompt, str) else list(body.prompt)),
        session=body.user,
    )
    record: dict[str, Any] = {
        "request_id": rid, "endpoint": "chat" if chat else "completions", "model": body.model,
        "key": principal.name, "policy": decision.policy,
        "features": {k: v for k, v in features.to_dict().items() if k != "estimates"},  # estimates: in decision
        "decision": decision.to_dict(), "decision_ms": round(decision_s * 1000, 4),
        "n": body.n, "prompts": len(prompts), "choices": count, "tokens_charged": charged,
    }
    if grammar is not None:
        record["response_format"] = body.response_format.type
    if cache_key is not None:
        record["cache"] = "miss"
    candidates = [b for b in [decision.backend, *decision.fallbacks] if principal.may_use(b)]
    deadline = time.perf_counter() + router.settings.request_timeout_s

    def new_choices() -> Choices:
        return Choices(count, body.n, chat=chat, logprobs=body.logprobs_k() is not None)

    async def finish(last: Choices | None, status: str = "200") -> None:
        elapsed = time.perf_counter() - t0
        m = router.metrics
        m.requests.labels(record["endpoint"], opened.backend, decision.rule, status).inc()
        if last is not None:
            m.tokens.labels(opened.backend, "prompt").inc(last.prompt_tokens)
            m.tokens.labels(opened.backend, "completion").inc(last.completion_tokens)
            m.tokens.labels(opened.backend, "cached").inc(last.cached_tokens)
            record.update(prompt_tokens=last.prompt_tokens, cached_tokens=last.cached_tokens,
                          completion_tokens=last.completion_tokens, finish_reason=last.finish_reason)
            if count > 1:
                record["finish_reasons"] = list(last.finish)
            unused = charged - last.prompt_tokens - last.completion_tokens
            await router.limiter.credit(principal.key_id, unused, principal.tpm)
        m.latency.labels(opened.backend, decision.rule).observe(elapsed)
        record.update(status=int(status), latency_ms=elapsed * 1000)
        await router.decisions.record(record)

    # A non-streamed answer has sent nothing yet, so a backend failing mid-generation is retried on the
    # next candidate like one failing before its first token; a stream that has started is never switched.
    failed_before: list[tuple[str, str]] = []
    remaining = candidates
    while True:
        try:
            opened = await open_stream(router.pool, remaining, gen_request, router.cooldowns,
                                       first_token_timeout_s=router.settings.request_timeout_s)
        except APIError as exc:
            record.update(status=exc.status, error=exc.message, fallbacks_tried=candidates,
                          failed_mid_generation=failed_before)
            router.metrics.requests.labels(record["endpoint"], "none", decision.rule, str(exc.status)).inc()
            await router.decisions.record(record)
            raise
        opened.failed[:0] = failed_before
        opened_at = time.perf_counter()
        record.update(backend=opened.backend, fallbacks_used=[n for n, _ in opened.failed])
        if opened.failed:  # why each earlier candidate was passed over (overloaded, down, context too long)
            record["fallback_errors"] = {n: e for n, e in opened.failed}
        if body.stream:
            break
        last = new_choices()
        last.add(opened.first)
        try:
            async with asyncio.timeout(max(0.0, deadline - time.perf_counter())):
                while not last.done:
                    last.add(await anext(opened.rest))
            break
        except TimeoutError:
            await finish(last, "504")
            raise APIError(504, f"generation took longer than {router.settings.request_timeout_s}s",
                           type="server_error", code="timeout") from None
        except Exception as exc:
            router.cooldowns.failed(opened.backend)
            log.warning("backend_failed_mid_generation", backend=opened.backend, error=repr(exc))
            failed_before = [*opened.failed, (opened.backend, f"{type(exc).__name__}: {exc}")]
            remaining = [c for c in candidates if c not in {n for n, _ in failed_before}]
            if not remaining:
                await finish(last, "500")
                raise APIError(500, f"backend {opened.backend!r} failed mid-generation: {exc}", type="server_error",
                               code="backend_error") from exc
        finally:
            # the backend's stream is suspended after its last chunk (or mid-way): close it now, so its
            # worker is released at once rather than whenever the generator is garbage-collected
            await opened.rest.aclose()

    ttft = opened_at - t0
    router.metrics.ttft.labels(opened.backend).observe(ttft)
    if opened.backend != decision.backend:
        router.metrics.fallbacks.labels(decision.backend, opened.backend).inc()
    record.update(ttft_ms=ttft * 1000)
    headers = {
        "x-archrouter-backend": opened.backend,
        "x-archrouter-rule": decision.rule if opened.backend == decision.backend else f"{decision.rule}+fallback",
        "x-archrouter-policy": decision.policy,
        **verdict.headers(),
    }
    fell_back = fallback.summary(decision, opened.backend, opened.failed, opened.reasons)
    if fell_back is not None:
        record["fallback"] = fell_back
    headers.update(fallback.headers(fell_back))

    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(_sse(opened, rid, new_choices(), include_usage, finish, deadline, router.cooldowns),
                                 media_type="text/event-stream", headers=headers)
    await finish(last)
    answer = last.response(rid, opened.backend)
    if cache_key is not None:
        headers["x-archrouter-cache"] = "miss"
        if opened.backend == decision.backend:  # a fallback's answer is not the decided backend's
            await cache.put(cache_key, answer)
    return JSONResponse(answer, headers=headers)


async def _from_cache(router: Router, hit: dict, rid: str, decision, features, principal: Principal, charged: int,
                      verdict, t0: float, decision_s: float) -> Response:
    """A stored answer to the same request under the same policy and backend: no engine is called."""
    await router.limiter.credit(principal.key_id, charged, principal.tpm)  # no tokens were processed
    endpoint = "chat" if hit.get("object") == "chat.completion" else "completions"
    answer = {**hit, "id": rid, "created": int(time.time())}
    elapsed = time.perf_counter() - t0
    router.metrics.requests.labels(endpoint, decision.backend, decision.rule, "200").inc()
    await router.decisions.record({
        "request_id": rid, "endpoint": endpoint, "key": principal.name, "policy": decision.policy,
        "features": {k: v for k, v in features.to_dict().items() if k != "estimates"},
        "decision": decision.to_dict(), "decision_ms": round(decision_s * 1000, 4), "backend": decision.backend,
        "cache": "hit", "status": 200, "latency_ms": elapsed * 1000,
    })
    return JSONResponse(answer, headers={
        "x-archrouter-backend": decision.backend, "x-archrouter-rule": decision.rule,
        "x-archrouter-policy": decision.policy, "x-archrouter-cache": "hit", **verdict.headers()})


async def _sse(opened: Opened, rid: str, acc: Choices, include_usage: bool, finish, deadline: float,
               cooldowns: Cooldowns) -> AsyncIterator[str]:
    def event(obj: dict) -> str:
        return f"data: {json.dumps(obj)}\n\n"

    model, last, status = opened.backend, None, "200"
    try:
        for frame in acc.role_events(rid, model):
            yield event(frame)
        chunk = opened.first
        last = acc
        while True:
            acc.add(chunk)
            if (frame := acc.event(rid, model, chunk)) is not None:
                yield event(frame)
            if acc.done:
                break
            chunk = await asyncio.wait_for(anext(opened.rest), max(0.0, deadline - time.perf_counter()))
        if include_usage:
            yield event(acc.usage_event(rid, model))
        yield "data: [DONE]\n\n"
    except Exception as exc:  # once streaming, an error ends the stream with an error event, never a switch
        timeout = isinstance(exc, TimeoutError)
        status = "504" if timeout else "500"
        if not timeout:
            cooldowns.failed(model)
        log.warning("stream_failed", backend=model, error=repr(exc))
        err = APIError(int(status), "generation timed out" if timeout else f"backend {model!r} failed mid-stream: "
                       f"{exc}", type="server_error", code="timeout" if timeout else "backend_error")
        yield event(err.body())
        yield "data: [DONE]\n\n"
    finally:
        if status == "200" and (last is None or not last.done):
            status = "499"  # the client went away before the end
        await opened.rest.aclose()
        await finish(last, status)
