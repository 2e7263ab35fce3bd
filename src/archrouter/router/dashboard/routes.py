"""`/dashboard`: the page, its static files, and the JSON and SSE endpoints it reads.

Keys follow the API's rules: every `/dashboard/api/*` endpoint authenticates like `/v1/*` (open
on a loopback server without keys, else any valid key); nothing here changes state. Applying a
policy is the page calling `PUT /admin/policy` with the admin key typed into it.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, RedirectResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from archrouter.router.auth import Principal
from archrouter.router.dashboard import capability, live, playground
from archrouter.router.dashboard.load import LoadTracker
from archrouter.router.errors import APIError

STATIC = Path(__file__).resolve().parent / "static"
_STATIC_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*\.(html|js|css|svg|png|txt)$")
_MEDIA = {"html": "text/html; charset=utf-8", "js": "text/javascript; charset=utf-8",
          "css": "text/css; charset=utf-8", "svg": "image/svg+xml", "png": "image/png",
          "txt": "text/plain; charset=utf-8"}
# Everything the page needs is served from here: no CDN, no inline script.
_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")


class PolicyText(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(max_length=256_000)


class DiffRequest(PolicyText):
    limit: int = Field(default=playground.DIFF_DEFAULT, ge=1, le=playground.DIFF_MAX)
    seed: int = 0


def build(router) -> APIRouter:
    """The dashboard's routes for one Router (state.Router); create_app includes them."""
    api = APIRouter(include_in_schema=False)
    recent = live.RecentDecisions()
    router.decisions.listeners.append(recent)  # the backlog a newly opened page starts from
    load = LoadTracker(router)
    sets = playground.LabelledSets()

    def principal(request: Request) -> Principal:
        return router.keys.authenticate(request.headers.get("authorization"))

    @api.get("/dashboard")
    async def page() -> Response:
        return FileResponse(STATIC / "index.html", media_type=_MEDIA["html"],
                            headers={"content-security-policy": _CSP, "cache-control": "no-cache",
                                     "x-content-type-options": "nosniff"})

    @api.get("/dashboard/")
    async def page_slash() -> Response:
        return RedirectResponse("/dashboard", status_code=308)

    @api.get("/dashboard/static/{name}")
    async def static(name: str) -> Response:
        path = STATIC / name
        if not _STATIC_NAME.match(name) or not path.is_file():
            raise APIError(404, f"no static file {name!r}", code="not_found")
        return FileResponse(path, media_type=_MEDIA[name.rsplit(".", 1)[1]],
                            headers={"cache-control": "no-cache", "x-content-type-options": "nosniff"})

    @api.get("/dashboard/api/info")
    async def info(p: Principal = Depends(principal)) -> dict[str, Any]:
        policy = router.policy
        return {
            "policy": policy.id,
            "policy_file": str(router.policies.path),
            "backends": [{"name": n, "family": c.info.family, "context_length": c.info.context_length}
                         for n, c in router.pool.clients.items() if p.may_use(n)],
            "rules": [r.name for r in policy.rules] + ["default"],
            "auth": "keys" if router.keys.enabled else "none",
            "admin": p.admin,
            "decisions": "redis" if router.settings.redis_url else "memory",
        }

    @api.get("/dashboard/api/decisions/stream")
    async def decisions(backend: str | None = None, rule: str | None = None,
                        _: Principal = Depends(principal)) -> StreamingResponse:
        keep = live.RowFilter(backend, rule)

        def memory():
            return live.memory_events(router.decisions.listeners, recent, keep)

        s = router.settings
        events = live.redis_events(s.redis_url, s.decision_stream, keep, memory) if s.redis_url else memory()
        return StreamingResponse(events, media_type="text/event-stream",
                                 headers={"cache-control": "no-cache", "x-accel-buffering": "no"})

    @api.get("/dashboard/api/backends")
    async def backends(_: Principal = Depends(principal)) -> dict[str, Any]:
        return load.snapshot()

    @api.get("/dashboard/api/examples")
    async def examples(_: Principal = Depends(principal)) -> dict[str, Any]:
        items = await asyncio.to_thread(sets.examples)
        return {"folder": str(playground.DATA_DIR), "examples": items}

    @api.get("/dashboard/api/examples/{file}/{index}")
    async def example(file: str, index: int, _: Principal = Depends(principal)) -> dict[str, Any]:
        rec = await asyncio.to_thread(sets.get, file, index)
        if rec is None:
            raise APIError(404, f"no labelled example {file}#{index}", param="index", code="not_found")
        return playground.example_body(rec)

    @api.post("/dashboard/api/policy/validate")
    async def validate(body: PolicyText, _: Principal = Depends(principal)) -> dict[str, Any]:
        return await asyncio.to_thread(playground.validate, body.text, router.policy,
                                       str(router.policies.path))

    @api.post("/dashboard/api/policy/diff")
    async def diff(body: DiffRequest, _: Principal = Depends(principal)) -> dict[str, Any]:
        return await asyncio.to_thread(playground.diff, body.text, router.policy, str(router.policies.path),
                                       sets, limit=body.limit, seed=body.seed)

    @api.get("/dashboard/api/capability")
    async def capability_files(_: Principal = Depends(principal)) -> dict[str, Any]:
        return capability.listing()

    @api.get("/dashboard/api/capability/{name}")
    async def capability_file(name: str, _: Principal = Depends(principal)) -> Response:
        found = capability.resolve(name)
        if found is None:
            raise APIError(404, f"no capability file {name!r}", code="not_found")
        return FileResponse(found[0], media_type=found[1], headers={"x-content-type-options": "nosniff"})

    return api
