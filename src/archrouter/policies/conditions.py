"""Rule conditions: check the YAML once at load time and compile it to closures.

A condition is a mapping. Each key is either a combinator (`all: [...]`, `any: [...]`, `not: cond`)
or a feature name whose value is a comparison (`{op: value}`, several ops meaning all of them, or a
bare scalar meaning `eq`). Several keys in one mapping must all hold.

Features (see policies.types.Features):
  prompt_tokens, max_tokens, turns          numbers
  state_tracking, task_probs.<task>         numbers in [0, 1]; <task> one of policies.types.TASKS
  task                                      a label: eq, ne, in, not_in only
  latency_ms.<backend>, cost.<backend>      the cost model's estimates for this request
  queue_depth.<backend>                     waiting requests reported by the engine (0 if none reported)
  metadata.<key>                            the request's `metadata` hints, compared as strings (ordering
                                            operators parse them as numbers); an absent key satisfies
                                            only ne and not_in
Operators: eq, ne, lt, lte, gt, gte, in, not_in (in/not_in take a non-empty list).

A compiled condition is `Check = (Features) -> (held, why)`, where `why` is a short sentence such as
"prompt_tokens=812 is not > 1500" that says why the condition held or did not. `not` keeps its inner
`why`: the same fact explains both outcomes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from archrouter.policies.errors import Loc, did_you_mean
from archrouter.policies.types import TASKS, Features

Check = Callable[[Features], tuple[bool, str]]
Kind = Literal["number", "task", "metadata"]

OPS: dict[str, tuple[str, str]] = {  # op -> (phrase when it holds, phrase when it does not)
    "eq": ("is", "is not"),
    "ne": ("is not", "is"),
    "lt": ("is <", "is not <"),
    "lte": ("is <=", "is not <="),
    "gt": ("is >", "is not >"),
    "gte": ("is >=", "is not >="),
    "in": ("is in", "is not in"),
    "not_in": ("is not in", "is in"),
}
ORDERING = ("lt", "lte", "gt", "gte")
COMBINATORS = ("all", "any", "not")
PLAIN_FEATURES: dict[str, Kind] = {
    "prompt_tokens": "number",
    "max_tokens": "number",
    "task": "task",
    "state_tracking": "number",
    "turns": "number",
}
PER_TASK = ("task_probs",)
PER_BACKEND = ("latency_ms", "cost", "queue_depth")


@dataclass(frozen=True)
class Feature:
    name: str
    kind: Kind
    get: Callable[[Features], Any]  # None when the request does not carry it
    unit_interval: bool = False  # probabilities and scores live in [0, 1]


@dataclass
class CompileContext:
    backends: Sequence[str]
    issues: list[tuple[Loc, str]] = field(default_factory=list)

    def error(self, loc: Loc, message: str) -> None:
        self.issues.append((loc, message))

    def feature_names(self) -> list[str]:
        names = list(PLAIN_FEATURES) + [f"task_probs.{t}" for t in TASKS]
        names += [f"{p}.{b}" for p in PER_BACKEND for b in self.backends]
        return names + ["metadata.<key>", *COMBINATORS]


def resolve_feature(name: str, ctx: CompileContext) -> Feature | str:
    """The feature called `name`, or a message saying why there is none."""
    if name in PLAIN_FEATURES:
        return Feature(name, PLAIN_FEATURES[name], _attr_getter(name), unit_interval=name == "state_tracking")
    prefix, dot, rest = name.partition(".")
    if dot and rest:
        if prefix == "task_probs":
            if rest not in TASKS:
                hint = did_you_mean(rest, TASKS)
                return f"unknown task '{rest}' in '{name}'{hint} (tasks: {', '.join(TASKS)})"
            return Feature(name, "number", lambda f, t=rest: f.task_probs.get(t, 0.0), unit_interval=True)
        if prefix in PER_BACKEND:
            if rest not in ctx.backends:
                hint = did_you_mean(rest, ctx.backends)
                return f"unknown backend '{rest}' in '{name}'{hint} (backends: {', '.join(ctx.backends)})"
            if prefix == "queue_depth":  # no report from an engine means nothing queued
                return Feature(name, "number", lambda f, b=rest: f.queue_depth.get(b, 0))
            attr = "latency_ms" if prefix == "latency_ms" else "cost"
            return Feature(name, "number", lambda f, b=rest, a=attr: _estimate_field(f, b, a))
        if prefix == "metadata":
            return Feature(name, "metadata", lambda f, k=rest: f.metadata.get(k))
    return f"unknown feature '{name}'{did_you_mean(name, ctx.feature_names())}"


def compile_condition(raw: Any, loc: Loc, ctx: CompileContext) -> Check | None:
    """Compile one condition; on mistakes record them in ctx.issues and return None."""
    before = len(ctx.issues)
    if not isinstance(raw, dict):
        ctx.error(
            loc, f"a condition is a mapping ({{feature: {{op: value}}}}, all, any or not), got {_show(raw)}"
        )
        return None
    if not raw:
        ctx.error(loc, "empty condition")
        return None
    parts: list[Check] = []
    for key, value in raw.items():
        here = (*loc, key)
        if not isinstance(key, str):
            ctx.error(here, f"a condition key must be a feature name or all/any/not, got {_show(key)}")
        elif key in ("all", "any"):
            if not isinstance(value, list) or not value:
                ctx.error(here, f"'{key}' takes a non-empty list of conditions, got {_show(value)}")
                continue
            subs = [compile_condition(v, (*here, i), ctx) for i, v in enumerate(value)]
            if all(s is not None for s in subs):
                parts.append(_all(subs) if key == "all" else _any(subs))  # type: ignore[arg-type]
        elif key == "not":
            sub = compile_condition(value, here, ctx)
            if sub is not None:
                parts.append(_not(sub))
        else:
            feature = resolve_feature(key, ctx)
            if isinstance(feature, str):
                ctx.error(here, feature)
                continue
            check = _compile_comparison(feature, value, here, ctx)
            if check is not None:
                parts.append(check)
    if len(ctx.issues) > before:
        return None
    return parts[0] if len(parts) == 1 else _all(parts)


# --- comparisons -----------------------------------------------------------------------------------


def _compile_comparison(feature: Feature, raw: Any, loc: Loc, ctx: CompileContext) -> Check | None:
    if isinstance(raw, list):
        ctx.error(loc, f"a bare list is ambiguous; write {{in: {_show(raw)}}}")
        return None
    if not isinstance(raw, dict):
        raw = {"eq": raw}  # a bare scalar means eq
        op_locs = {"eq": loc}
    else:
        op_locs = {op: (*loc, op) for op in raw}
    if not raw:
        ctx.error(
            loc, f"no comparison for '{feature.name}'; write {{op: value}} with op one of {', '.join(OPS)}"
        )
        return None
    checks: list[Check] = []
    for op, value in raw.items():
        here = op_locs[op]
        if op not in OPS:
            ctx.error(
                here, f"unknown operator '{op}'{did_you_mean(str(op), OPS)} (operators: {', '.join(OPS)})"
            )
            continue
        converted = _check_value(feature, op, value, here, ctx)
        if converted is not None:
            checks.append(_leaf(feature, op, converted[0]))
    if len(checks) != len(raw):
        return None
    return checks[0] if len(checks) == 1 else _all(checks)


def _check_value(feature: Feature, op: str, value: Any, loc: Loc, ctx: CompileContext) -> tuple[Any] | None:
    """The comparison's right-hand side, normalised for fast evaluation (wrapped so None is 'invalid')."""
    if op in ("in", "not_in"):
        if not isinstance(value, list) or not value:
            ctx.error(loc, f"'{op}' takes a non-empty list, got {_show(value)}")
            return None
        items = [_check_scalar(feature, op, v, (*loc, i), ctx) for i, v in enumerate(value)]
        if any(i is None for i in items):
            return None
        return (frozenset(i[0] for i in items),)  # type: ignore[index]
    return _check_scalar(feature, op, value, loc, ctx)


def _check_scalar(feature: Feature, op: str, value: Any, loc: Loc, ctx: CompileContext) -> tuple[Any] | None:
    name = feature.name
    if feature.kind == "task":
        if op in ORDERING:
            ctx.error(loc, f"'{op}' does not apply to 'task' (a label); use eq, ne, in or not_in")
            return None
        if value not in TASKS:
            hint = did_you_mean(str(value), TASKS)
            ctx.error(loc, f"'{name}' is one of {', '.join(TASKS)}; got {_show(value)}{hint}")
            return None
        return (value,)
    number = (isinstance(value, int) and not isinstance(value, bool)) or (
        isinstance(value, float) and math.isfinite(value)
    )
    if feature.kind == "metadata":
        if op in ORDERING:
            if not number:
                ctx.error(loc, f"'{op}' compares numbers; got {_show(value)}")
                return None
            return (float(value),)
        if isinstance(value, bool):
            return ("true" if value else "false",)  # request metadata values are strings
        if isinstance(value, str) or number:
            return (str(value),)
        ctx.error(loc, f"'{name}' compares with a string or number; got {_show(value)}")
        return None
    if not number:
        ctx.error(loc, f"'{name}' is a number; got {_show(value)}")
        return None
    if feature.unit_interval and not 0.0 <= value <= 1.0:
        ctx.error(loc, f"'{name}' is a probability in [0, 1]; got {_show(value)}")
        return None
    return (value,)


def _leaf(feature: Feature, op: str, rhs: Any) -> Check:
    get, name = feature.get, feature.name
    yes, no = OPS[op]
    shown = _fmt(rhs)
    test = _TESTS[op]
    ordering = op in ORDERING
    metadata = feature.kind == "metadata"

    def check(f: Features) -> tuple[bool, str]:
        value = get(f)
        if value is None:  # absent: only the negative comparisons hold
            held = op in ("ne", "not_in")
            return held, f"{name} is absent"
        if metadata and ordering:
            try:
                value = float(value)
            except (TypeError, ValueError):
                return False, f"{name}={value!r} is not a number"
        held = test(value, rhs)
        return held, f"{name}={_fmt(value)} {yes if held else no} {shown}"

    return check


_TESTS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "lt": lambda a, b: a < b,
    "lte": lambda a, b: a <= b,
    "gt": lambda a, b: a > b,
    "gte": lambda a, b: a >= b,
    "in": lambda a, b: a in b,
    "not_in": lambda a, b: a not in b,
}


# --- combinators -----------------------------------------------------------------------------------


def _all(checks: list[Check]) -> Check:
    def check(f: Features) -> tuple[bool, str]:
        whys = []
        for c in checks:
            held, why = c(f)
            if not held:
                return False, why
            whys.append(why)
        return True, " and ".join(whys)

    return check


def _any(checks: list[Check]) -> Check:
    def check(f: Features) -> tuple[bool, str]:
        whys = []
        for c in checks:
            held, why = c(f)
            if held:
                return True, why
            whys.append(why)
        return False, " and ".join(whys)

    return check


def _not(inner: Check) -> Check:
    def check(f: Features) -> tuple[bool, str]:
        held, why = inner(f)
        return not held, why

    return check


# --- helpers ---------------------------------------------------------------------------------------


def _attr_getter(name: str) -> Callable[[Features], Any]:
    return lambda f: getattr(f, name)


def _estimate_field(f: Features, backend: str, attr: str) -> float | None:
    est = f.estimates.get(backend)
    return None if est is None else getattr(est, attr)


def _fmt(value: Any) -> str:
    if isinstance(value, frozenset):
        return "[" + ", ".join(sorted(_fmt(v) for v in value)) + "]"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
