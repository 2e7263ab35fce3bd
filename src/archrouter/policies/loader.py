"""Read a policy file, check everything, and report each mistake with its file, line and field.

Checks, in one pass so a user sees every problem at once: YAML syntax, duplicate keys, the schema
(unknown keys with the closest known one suggested, missing keys, wrong types), duplicate backend and
rule names, an empty catalogue, backend names in routes and fallbacks, the conditions (features,
operators, value types), and the classifier file.

Lines come from the composed YAML node tree: each error's location (mapping keys and list indices)
is walked down the tree to the deepest node that exists.
"""

from __future__ import annotations

import hashlib
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydantic
import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from archrouter.policies.conditions import CompileContext, compile_condition
from archrouter.policies.engine import CompiledRule, Policy
from archrouter.policies.errors import Loc, PolicyError, PolicyIssue, did_you_mean, field_path
from archrouter.policies.features import Classifier
from archrouter.policies.schema import PolicySpec

ClassifierLoader = Callable[[Path], Classifier]

# Pydantic reports one error per member of a union; these mean "this member is the wrong type".
_TYPE_ERRORS = {"string_type", "model_type", "dict_type", "list_type", "model_attributes_type"}
_MESSAGES = {
    "route": "expected a backend name, or {cheapest: [names]} or {fastest: [names]}",
}


def load_policy(
    path: str | Path,
    *,
    root: str | Path | None = None,
    classifier: Classifier | None = None,
    load_classifier: ClassifierLoader | None = None,
) -> Policy:
    """Load and check a policy file; raise PolicyError listing every mistake.

    The classifier path is resolved against `root` (default: the current directory), then against
    the policy file's folder and its parents. Pass `classifier` to use one already in memory (the
    file is then not read), or `load_classifier` to read the file another way than
    policies.classifier.TaskClassifier.load.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise PolicyError([PolicyIssue(str(path), 0, "", f"cannot read the policy file: {e}")]) from None
    return parse_policy(
        text, file=str(path), root=root, classifier=classifier, load_classifier=load_classifier
    )


def parse_policy(
    text: str,
    *,
    file: str = "<string>",
    root: str | Path | None = None,
    classifier: Classifier | None = None,
    load_classifier: ClassifierLoader | None = None,
) -> Policy:
    """Check a policy given as text; `file` names it in errors (and anchors the classifier search)."""
    issues: list[tuple[Loc, str]] = []

    def fail(extra: list[PolicyIssue] | None = None) -> PolicyError:
        return PolicyError(
            [PolicyIssue(file, _line_of(node, loc), field_path(loc), m) for loc, m in issues] + (extra or [])
        )

    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else 0
        message = " ".join(str(p) for p in (e.context, e.problem) if p) or str(e)
        raise PolicyError([PolicyIssue(file, line, "", f"YAML syntax error: {message}")]) from None
    except yaml.YAMLError as e:
        raise PolicyError([PolicyIssue(file, 0, "", f"YAML error: {e}")]) from None
    if node is None or not isinstance(data, dict):
        line = node.start_mark.line + 1 if node is not None else 1
        got = "an empty file" if data is None else type(data).__name__
        raise PolicyError(
            [PolicyIssue(file, line, "", f"a policy is a mapping (name, backends, ...); got {got}")]
        )

    duplicates = _duplicate_keys(node, (), file)
    spec: PolicySpec | None = None
    try:
        spec = PolicySpec.model_validate(data)
    except pydantic.ValidationError as e:
        issues += _schema_issues(e, data)

    backend_names = _backend_names(data, issues)
    issues += _rule_name_issues(data)
    issues += _reference_issues(data, backend_names)
    ctx = CompileContext(backends=backend_names)
    checks = _compile_rules(data, ctx)
    issues += ctx.issues

    classifier_path = None
    if classifier is None and isinstance(data.get("classifier"), str) and data["classifier"]:
        classifier_path = _find_classifier(data["classifier"], file, root, issues)
    if classifier_path is not None and spec is not None and not issues:
        classifier = _load_classifier(classifier_path, load_classifier, issues)
    if issues or duplicates or spec is None or classifier is None:
        raise fail(duplicates)
    version = spec.version or hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]
    rules = [CompiledRule(spec=r, check=c) for r, c in zip(spec.rules, checks, strict=True)]
    return Policy(spec, version=version, rules=rules, classifier=classifier, file=file)


# --- YAML structure ----------------------------------------------------------------------------------


def _line_of(root: Node, loc: Loc) -> int:
    """1-based line of the deepest node on `loc` (a mapping entry counts from its key)."""
    node, line = root, root.start_mark.line + 1
    for part in loc:
        if isinstance(node, MappingNode):
            for key, value in node.value:
                if isinstance(key, ScalarNode) and key.value == str(part):
                    node, line = value, key.start_mark.line + 1
                    break
            else:
                return line
        elif isinstance(node, SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def _duplicate_keys(node: Node, loc: Loc, file: str) -> list[PolicyIssue]:
    """YAML lets a repeated key silently replace the first; in a policy that hides a mistake."""
    out: list[PolicyIssue] = []
    if isinstance(node, MappingNode):
        first: dict[str, int] = {}
        for key, value in node.value:
            name = key.value if isinstance(key, ScalarNode) else None
            if name is not None and name in first:
                where = field_path((*loc, name))
                line = key.start_mark.line + 1
                out.append(
                    PolicyIssue(file, line, where, f"duplicate key '{name}' (first on line {first[name]})")
                )
            elif name is not None:
                first[name] = key.start_mark.line + 1
            out += _duplicate_keys(value, (*loc, name if name is not None else "?"), file)
    elif isinstance(node, SequenceNode):
        for i, item in enumerate(node.value):
            out += _duplicate_keys(item, (*loc, i), file)
    return out


# --- schema errors ---------------------------------------------------------------------------------


def _schema_issues(error: pydantic.ValidationError, data: Any) -> list[tuple[Loc, str]]:
    found: list[tuple[Loc, str, str, bool]] = []  # (loc in the data, error type, message, inside a union)
    for err in error.errors(include_url=False):
        loc, in_union = _data_loc(tuple(err["loc"]), data, err["type"])
        found.append((loc, err["type"], _message(loc, err), in_union))
    out: list[tuple[Loc, str]] = []
    seen: set[tuple[Loc, str]] = set()
    for loc, kind, message, in_union in found:
        if in_union and kind in _TYPE_ERRORS:
            # Drop "wrong type for this union member" when another member got further.
            if any(
                o[3] and o[0][: len(loc)] == loc and (o[1] not in _TYPE_ERRORS or len(o[0]) > len(loc))
                for o in found
            ):
                continue
            message = _MESSAGES.get(str(loc[-1]) if loc else "", message)
        if (loc, message) not in seen:
            seen.add((loc, message))
            out.append((loc, message))
    return out


def _data_loc(loc: Loc, data: Any, kind: str) -> tuple[Loc, bool]:
    """Pydantic's loc with union-member tags (e.g. 'str', 'function-after[...]') removed."""
    out: list[str | int] = []
    node, dropped = data, False
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        in_dict = isinstance(node, dict) and part in node
        if in_dict or (isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)):
            node = node[part]
        elif last and kind == "missing":
            pass  # the missing key itself
        else:
            dropped = True
            continue
        out.append(part)
    return tuple(out), dropped


def _message(loc: Loc, err: Any) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        allowed = list(_fields_at(loc[:-1]))
        return f"unknown key '{loc[-1]}'{did_you_mean(str(loc[-1]), allowed)} (allowed: {', '.join(allowed)})"
    if kind == "missing":
        return f"missing required key '{loc[-1]}'"
    message = err["msg"]
    if "input" in err and kind not in ("value_error",):
        message += f"; got {_show(err['input'])}"
    return message.removeprefix("Value error, ")


def _fields_at(loc: Loc) -> list[str]:
    """The keys the schema allows at `loc` (a path of mapping keys and list indices)."""
    model: type[pydantic.BaseModel] | None = PolicySpec
    for part in loc:
        if isinstance(part, int) or model is None:
            continue
        info = model.model_fields.get(str(part))
        model = _model_in(info.annotation) if info else None
    return list(model.model_fields) if model else []


def _model_in(annotation: Any) -> type[pydantic.BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found:
            return found
    return None


# --- names and references ----------------------------------------------------------------------------


def _backend_names(data: dict, issues: list[tuple[Loc, str]]) -> list[str]:
    backends = data.get("backends")
    if not isinstance(backends, list):
        return []
    if not backends:
        issues.append((("backends",), "the backend catalogue is empty; list at least one backend"))
    names: list[str] = []
    for i, b in enumerate(backends):
        name = b.get("name") if isinstance(b, dict) else None
        if not isinstance(name, str):
            continue
        if name in names:
            issues.append((("backends", i, "name"), f"duplicate backend name '{name}'"))
        else:
            names.append(name)
    return names


def _rule_name_issues(data: dict) -> list[tuple[Loc, str]]:
    rules = data.get("rules")
    out: list[tuple[Loc, str]] = []
    seen: set[str] = set()
    reserved = ("default", "pinned")  # Decision.rule values of their own
    for i, r in enumerate(rules if isinstance(rules, list) else []):
        name = r.get("name") if isinstance(r, dict) else None
        if not isinstance(name, str):
            continue
        if name in seen:
            out.append((("rules", i, "name"), f"duplicate rule name '{name}'"))
        elif name in reserved:
            out.append((("rules", i, "name"), f"'{name}' is reserved for decisions made without a rule"))
        seen.add(name)
    return out


def _reference_issues(data: dict, names: list[str]) -> list[tuple[Loc, str]]:
    out: list[tuple[Loc, str]] = []
    if not names:
        return out  # no catalogue to check against (already reported)

    def check(loc: Loc, value: Any) -> None:
        if isinstance(value, str) and value not in names:
            out.append(
                (loc, f"unknown backend '{value}'{did_you_mean(value, names)} (backends: {', '.join(names)})")
            )

    targets: list[tuple[Loc, Any]] = []
    rules = data.get("rules")
    for i, r in enumerate(rules if isinstance(rules, list) else []):
        if isinstance(r, dict):
            targets.append((("rules", i), r))
    if isinstance(data.get("default"), dict):
        targets.append((("default",), data["default"]))
    for loc, holder in targets:
        route = holder.get("route")
        if isinstance(route, str):
            check((*loc, "route"), route)
        elif isinstance(route, dict):
            for by in ("cheapest", "fastest"):
                if isinstance(route.get(by), list):
                    for j, name in enumerate(route[by]):
                        check((*loc, "route", by, j), name)
        fallbacks = holder.get("fallbacks")
        if isinstance(fallbacks, list):
            for j, name in enumerate(fallbacks):
                check((*loc, "fallbacks", j), name)
    cap = data.get("capability")
    tasks = cap.get("tasks") if isinstance(cap, dict) else None
    for task, t in (tasks or {}).items() if isinstance(tasks, dict) else ():
        acc = t.get("accuracy") if isinstance(t, dict) else None
        for name in acc if isinstance(acc, dict) else ():
            check(("capability", "tasks", task, "accuracy", name), name)
    return out


def _compile_rules(data: dict, ctx: CompileContext) -> list[Any]:
    rules = data.get("rules")
    checks = []
    for i, r in enumerate(rules if isinstance(rules, list) else []):
        if isinstance(r, dict) and "when" in r:
            checks.append(compile_condition(r["when"], ("rules", i, "when"), ctx))
        else:
            checks.append(None)  # the schema reports the missing `when`
    return checks


# --- classifier --------------------------------------------------------------------------------------


def _find_classifier(
    name: str, file: str, root: str | Path | None, issues: list[tuple[Loc, str]]
) -> Path | None:
    path = _resolve(name, file, root)
    if path is None:
        issues.append(
            (
                ("classifier",),
                f"classifier file '{name}' not found (train one with "
                "`archrouter classifier train`, or fix the path)",
            )
        )
    return path


def _load_classifier(
    path: Path, loader: ClassifierLoader | None, issues: list[tuple[Loc, str]]
) -> Classifier | None:
    if loader is None:
        from archrouter.policies.classifier import TaskClassifier  # imported here: scikit-learn loads only when needed

        loader = TaskClassifier.load
    try:
        return loader(path)
    except Exception as e:  # any failure to read the file is a policy error, reported with its line
        issues.append((("classifier",), f"cannot load classifier '{path}': {type(e).__name__}: {e}"))
        return None


def _resolve(name: str, file: str, root: str | Path | None) -> Path | None:
    """An absolute path as is; a relative one against root (or cwd), then the policy's folder and up."""
    p = Path(name)
    if p.is_absolute():
        return p if p.is_file() else None
    bases = [Path(root) if root is not None else Path.cwd()]
    if not file.startswith("<"):
        here = Path(file).resolve().parent
        bases += [here, *here.parents]
    for base in bases:
        if (base / p).is_file():
            return base / p
    return None


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
