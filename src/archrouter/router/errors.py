"""OpenAI-shaped errors: {"error": {"message", "type", "param", "code"}}."""

from __future__ import annotations

import json

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException


class APIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict", "none"}

# OpenAI request fields this server knows and does not serve: a 400 that says so, not just "unrecognized"
UNSUPPORTED = {
    "tools": "tool calling", "tool_choice": "tool calling", "parallel_tool_calls": "tool calling",
    "functions": "function calling", "function_call": "function calling", "audio": "audio output",
    "modalities": "output modalities other than text", "prediction": "predicted outputs",
    "web_search_options": "web search", "reasoning_effort": "reasoning models", "store": "stored completions",
    "service_tier": "service tiers", "suffix": "insertion (suffix)", "best_of": "best_of",
}


def _param(loc: tuple) -> str | None:
    # drop "body" and pydantic's union-member tags ("str", "list[TextPart]", "function-after[...]")
    parts = [str(p) for p in loc if p != "body" and (isinstance(p, int) or (
        str(p).isidentifier() and str(p) not in _TYPE_TAGS))]
    if not parts:
        return None
    out = parts[0]
    for p in parts[1:]:
        out += f"[{p}]" if p.isdigit() else f".{p}"
    return out


def validation_error(exc: RequestValidationError) -> APIError:
    errors = exc.errors()
    err = errors[0]
    # a union (content: str | list[part]) reports every member; the deepest error about the same field
    # is the one that says what is wrong ("control character in messages[0].content[0].text", not
    # "messages[0].content should be a string")
    same = [e for e in errors if _param(tuple(e.get("loc", ()))[:4]) == _param(tuple(err.get("loc", ()))[:4])]
    err = max(same, key=lambda e: len(e.get("loc", ())))
    if err.get("type") == "json_invalid":
        return APIError(400, f"Request body is not valid JSON: {err.get('ctx', {}).get('error', err['msg'])}",
                        code="invalid_json")
    param = _param(tuple(err.get("loc", ())))
    if err.get("type") == "extra_forbidden" and param in UNSUPPORTED:
        msg = f"'{param}' is not supported by this server ({UNSUPPORTED[param]} is not implemented)"
    elif err.get("type") == "extra_forbidden":
        msg = f"Unrecognized request argument supplied: {param}"
    elif err.get("type") == "missing":
        msg = f"Missing required parameter: '{param}'."
    else:
        msg = f"Invalid value for '{param}': {err['msg']}" + (
            f" (got {json.dumps(err['input'], default=str)[:80]})" if "input" in err else ""
        )
    more = len(exc.errors()) - 1
    if more:
        msg += f" (and {more} more error{'s' * (more > 1)})"
    return APIError(400, msg, param=param, code=err.get("type"))


def install(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_error(exc).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return APIError(exc.status_code, str(exc.detail), code=code).response()
