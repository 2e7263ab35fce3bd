"""Limits on input that must hold before pydantic sees a body.

A pure ASGI middleware: caps the body size (Content-Length and the bytes actually sent), rejects
bodies that are not UTF-8 and JSON nested deeper than a bound (deep nesting would otherwise
exhaust the parser's recursion and surface as a 500). Field-level limits (message count,
max_tokens, stop strings, control characters) live in the request schemas.
"""

from __future__ import annotations

import json
import re

import numpy as np

from archrouter.router.errors import APIError

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')  # unrolled: no per-character backtracking
_OPEN, _CLOSE = np.frombuffer(b"[{", np.uint8), np.frombuffer(b"]}", np.uint8)


def json_depth_exceeds(body: bytes, limit: int) -> bool:
    """True if brackets nest deeper than `limit` (string contents ignored), at C speed."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    code = np.frombuffer(_STRING.sub(b'""', body), np.uint8)
    step = np.isin(code, _OPEN).astype(np.int32) - np.isin(code, _CLOSE).astype(np.int32)
    return bool(step.size) and int(np.cumsum(step).max()) > limit


class InputLimits:
    def __init__(self, app, *, max_body_bytes: int, max_json_depth: int):
        self.app, self.max_body_bytes, self.max_json_depth = app, max_body_bytes, max_json_depth

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            return await self._reject(send, _too_large(self.max_body_bytes))
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return await self._reject(send, _too_large(self.max_body_bytes))
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        ctype = headers.get(b"content-type", b"")
        if body and (b"json" in ctype or not ctype):
            try:
                body.decode("utf-8")
            except UnicodeDecodeError as exc:
                return await self._reject(send, APIError(
                    400, f"Request body is not valid UTF-8 (byte {exc.start})", code="invalid_encoding"))
            if json_depth_exceeds(body, self.max_json_depth):
                return await self._reject(send, APIError(
                    400, f"Request JSON is nested deeper than {self.max_json_depth} levels", code="json_too_deep"))
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    @staticmethod
    async def _reject(send, err: APIError) -> None:
        payload = json.dumps(err.body()).encode()
        await send({"type": "http.response.start", "status": err.status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})


def _too_large(limit: int) -> APIError:
    return APIError(413, f"Request body is larger than {limit} bytes", code="request_too_large")
