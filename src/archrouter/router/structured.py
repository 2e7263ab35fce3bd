"""`response_format` -> the grammar the backend's sampler enforces (llguidance), or a 400 naming the problem.

`json_object` is any JSON object; `json_schema` is the given schema. Both compile with compact
separators and no free whitespace (llguidance's `whitespace_flexible: false`; a schema may override it
with its own `x-guidance` options), so an answer's length is bounded by the schema rather than by how
many spaces a model likes to emit. A schema llguidance cannot compile is rejected here, before routing.
"""

from __future__ import annotations

import json

from archrouter.router.errors import APIError
from archrouter.router.schemas import ResponseFormat

JSON_DEFAULTS = {"whitespace_flexible": False}
ANY_OBJECT = {"type": "object"}


def grammar_for(fmt: ResponseFormat | None) -> str | None:
    """The llguidance grammar for `fmt`; None for plain text."""
    if fmt is None or fmt.type == "text":
        return None
    from llguidance import LLMatcher

    param = "response_format.json_schema.schema" if fmt.type == "json_schema" else "response_format"
    schema = ANY_OBJECT if fmt.type == "json_object" else fmt.json_schema.schema_
    try:
        grammar = LLMatcher.grammar_from_json_schema(json.dumps(schema), defaults=JSON_DEFAULTS)
        failed, messages = LLMatcher.validate_grammar_with_warnings(grammar)
    except Exception as exc:  # noqa: BLE001 - whatever llguidance raises about a schema is the client's 400
        failed, messages = True, [str(exc)]
    if failed:
        raise APIError(400, f"{param} cannot be used for structured output: {'; '.join(messages)}", param=param,
                       code="invalid_json_schema")
    return grammar
