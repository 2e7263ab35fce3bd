"""The labelled-prompt record (design.md, "A labelled prompt") and its JSONL reader/writer.

It lives in `policies` because the classifier trains from it and `policies` imports nothing of
ours; `evals.schema` re-exports it for the offline evaluator.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from archrouter.policies.types import Task


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str


class LabelledPrompt(BaseModel):
    """One labelled prompt: exactly one of `messages` or `prompt`, and its task."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = None
    messages: list[Message] | None = None
    prompt: str | None = None
    task: Task
    state_tracking: bool | None = None
    best_backend: str | None = None
    answer: str | None = None
    # provenance, so held-out metrics can be split by kind (generator template id, "handwritten")
    template: str | None = None
    tags: list[str] = []

    @model_validator(mode="after")
    def _one_form(self) -> LabelledPrompt:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("exactly one of 'messages' or 'prompt' is required")
        if self.messages is not None and not self.messages:
            raise ValueError("'messages' must not be empty")
        return self

    def text(self) -> str:
        """The text the classifier sees (see `render_messages`)."""
        if self.prompt is not None:
            return self.prompt
        return render_messages([m.model_dump() for m in self.messages or []])

    def tracks_state(self) -> bool:
        """`state_tracking` when given, else true exactly for state_tracking items."""
        return self.task == "state_tracking" if self.state_tracking is None else self.state_tracking


def render_messages(messages: Iterable[Any]) -> str:
    """Join a chat into one string: "role: content" blocks in order, so the last user turn ends the text.

    Accepts dicts or objects with `role` and `content` (OpenAI-style; list contents of text parts are
    joined). The router must render requests with this same function so serving matches training.
    """
    parts = []
    for m in messages:
        role = m["role"] if isinstance(m, dict) else m.role
        content = m["content"] if isinstance(m, dict) else m.content
        if isinstance(content, list):  # OpenAI content parts
            content = " ".join(
                p.get("text", "") if isinstance(p, dict) else str(getattr(p, "text", "")) for p in content
            )
        parts.append(f"{role}: {content or ''}")
    return "\n\n".join(parts)


class LabelledDataError(ValueError):
    """Bad labelled JSONL; `errors` holds one "file:line: field: message" string per problem."""

    def __init__(self, errors: list[str]):
        self.errors = errors
        shown = "\n".join(errors[:20]) + (f"\n... and {len(errors) - 20} more" if len(errors) > 20 else "")
        super().__init__(shown)


def _field(loc: Sequence[Any]) -> str:
    return ".".join(str(p) for p in loc) or "<record>"


def parse_lines(lines: Iterable[str], source: str = "<input>") -> list[LabelledPrompt]:
    """Validate JSONL lines (blank lines skipped); raise LabelledDataError naming source, line and field."""
    records: list[LabelledPrompt] = []
    errors: list[str] = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            errors.append(f"{source}:{lineno}: invalid JSON: {e.msg} (column {e.colno})")
            continue
        if not isinstance(obj, dict):
            errors.append(f"{source}:{lineno}: <record>: expected a JSON object, got {type(obj).__name__}")
            continue
        try:
            records.append(LabelledPrompt.model_validate(obj))
        except ValidationError as e:
            for err in e.errors():
                errors.append(f"{source}:{lineno}: {_field(err['loc'])}: {err['msg']}")
    if errors:
        raise LabelledDataError(errors)
    return records


def _open_text(path: Path, mode: str):
    # a name ending in .gz is gzip: the large shipped sets are stored compressed (src/archrouter/evals/data/*.jsonl.gz)
    if path.suffix == ".gz":
        return gzip.open(path, mode + "t", encoding="utf-8")
    return path.open(mode, encoding="utf-8")


def read_labelled(path: str | Path) -> list[LabelledPrompt]:
    """Read labelled JSONL, gzip-compressed when the name ends in .gz."""
    path = Path(path)
    with _open_text(path, "r") as f:
        return parse_lines(f, str(path))


def iter_jsonl(records: Iterable[LabelledPrompt]) -> Iterator[str]:
    for r in records:
        yield json.dumps(r.model_dump(exclude_none=True, exclude_defaults=True), ensure_ascii=False) + "\n"


def write_labelled(path: str | Path, records: Iterable[LabelledPrompt]) -> None:
    """Write labelled JSONL, gzip-compressed when the name ends in .gz (with mtime 0, so the bytes are
    the same for the same records and the manifest's sha256 is reproducible)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        with path.open("wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
            gz.write("".join(iter_jsonl(records)).encode("utf-8"))
        return
    with path.open("w", encoding="utf-8") as f:
        f.writelines(iter_jsonl(records))
