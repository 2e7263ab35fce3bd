"""Policy errors that point at the file, the line and the field."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass

Loc = tuple[str | int, ...]  # a location inside the YAML document: mapping keys and list indices


@dataclass(frozen=True)
class PolicyIssue:
    file: str
    line: int  # 1-based; 0 when the file itself is the problem (e.g. unreadable)
    field: str  # dotted path, e.g. "rules[1].when.all[0].prompt_tokens.gt"; "" for the whole file
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.field or '<file>'}: {self.message}"


class PolicyError(ValueError):
    """A policy that must not be served. `.issues` lists every problem found, in file order."""

    def __init__(self, issues: Iterable[PolicyIssue]):
        self.issues: list[PolicyIssue] = sorted(issues, key=lambda i: (i.line, i.field))
        super().__init__("\n".join(str(i) for i in self.issues))


def field_path(loc: Loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest choice, or '' when nothing is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""
