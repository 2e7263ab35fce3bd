"""Every kind of policy mistake is reported with the file, the exact line and the field.

Each case is a whole policy file; the line the error must point at carries the marker `# <-`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from archrouter.policies.errors import PolicyError
from archrouter.policies.loader import load_policy, parse_policy
from tests.policies.conftest import KeywordClassifier

HEAD = """\
name: test
classifier: clf.json
"""
CATALOGUE = """\
backends:
  - name: small
    family: transformer
    checkpoint: models/small
    context_length: 2048
  - name: rwkv
    family: rwkv
    checkpoint: models/rwkv
    context_length: 8192
"""
DEFAULT = """\
default: {route: small}
"""


def doc(rules: str, *, head: str = HEAD, catalogue: str = CATALOGUE, default: str = DEFAULT) -> str:
    return head + catalogue + rules + default


CASES = {
    "yaml-syntax": (
        doc("rules:\n  - name: a\n    when: {prompt_tokens: {gt: 5}\n    route: small  # <-\n"),
        "",
        "YAML syntax error",
    ),
    "unknown-top-level-key": (
        doc("rulez: []  # <-\n"),
        "rulez",
        "unknown key 'rulez'; did you mean 'rules'?",
    ),
    "unknown-backend-key": (
        doc("", catalogue=CATALOGUE.replace("    context_length: 8192", "    contxt_length: 8192  # <-")),
        "backends[1].contxt_length",
        "unknown key 'contxt_length'; did you mean 'context_length'?",
    ),
    "unknown-cost-key": (
        doc("", catalogue=CATALOGUE + "    cost:\n      prefill_ms: {base: 1.0, per_tokn: 0.1}  # <-\n"),
        "backends[1].cost.prefill_ms.per_tokn",
        "did you mean 'per_token'?",
    ),
    "unknown-rule-key": (
        doc("rules:\n  - name: a\n    when: {task: code}\n    route: small\n    fallback: [rwkv]  # <-\n"),
        "rules[0].fallback",
        "did you mean 'fallbacks'?",
    ),
    "unknown-route-choice-key": (
        doc("rules:\n  - name: a\n    when: {task: code}\n    route: {chepest: [small, rwkv]}  # <-\n"),
        "rules[0].route.chepest",
        "unknown key 'chepest'; did you mean 'cheapest'?",
    ),
    "missing-key": (
        doc("rules:\n  - name: a  # <-\n    when: {task: code}\n"),
        "rules[0].route",
        "missing required key 'route'",
    ),
    "bad-family": (
        doc("", catalogue=CATALOGUE.replace("family: rwkv", "family: rwkv7  # <-")),
        "backends[1].family",
        "'transformer', 'mamba', 'rwkv' or 'xlstm'",
    ),
    "bad-context-length": (
        doc("", catalogue=CATALOGUE.replace("context_length: 8192", "context_length: lots  # <-")),
        "backends[1].context_length",
        "valid integer",
    ),
    "route-wrong-type": (
        doc("rules:\n  - name: a\n    when: {task: code}\n    route: 5  # <-\n"),
        "rules[0].route",
        "expected a backend name, or {cheapest: [names]} or {fastest: [names]}",
    ),
    "route-both-cheapest-and-fastest": (
        doc(
            "rules:\n  - name: a\n    when: {task: code}\n"
            "    route: {cheapest: [small], fastest: [rwkv]}  # <-\n"
        ),
        "rules[0].route",
        "exactly one of 'cheapest' or 'fastest'",
    ),
    "unknown-backend-in-route": (
        doc("rules:\n  - name: a\n    when: {task: code}\n    route: smal  # <-\n"),
        "rules[0].route",
        "unknown backend 'smal'; did you mean 'small'?",
    ),
    "unknown-backend-in-fallbacks": (
        doc(
            "rules:\n  - name: a\n    when: {task: code}\n    route: small\n    fallbacks:\n"
            "      - rwkv\n      - xlstm  # <-\n"
        ),
        "rules[0].fallbacks[1]",
        "unknown backend 'xlstm'",
    ),
    "unknown-backend-in-cheapest": (
        doc(
            "rules:\n  - name: a\n    when: {task: code}\n    route:\n      cheapest:\n"
            "        - small\n        - mamba  # <-\n"
        ),
        "rules[0].route.cheapest[1]",
        "unknown backend 'mamba'",
    ),
    "unknown-backend-in-default": (
        doc("", default="default:\n  route: transformer  # <-\n"),
        "default.route",
        "unknown backend 'transformer'",
    ),
    "unknown-backend-in-feature": (
        doc("rules:\n  - name: a\n    when:\n      latency_ms.rwvk: {lt: 100}  # <-\n    route: small\n"),
        "rules[0].when.latency_ms.rwvk",
        "unknown backend 'rwvk' in 'latency_ms.rwvk'; did you mean 'rwkv'?",
    ),
    "unknown-feature": (
        doc("rules:\n  - name: a\n    when:\n      promt_tokens: {gt: 5}  # <-\n    route: small\n"),
        "rules[0].when.promt_tokens",
        "unknown feature 'promt_tokens'; did you mean 'prompt_tokens'?",
    ),
    "unknown-task-in-task-probs": (
        doc("rules:\n  - name: a\n    when:\n      task_probs.coding: {gt: 0.5}  # <-\n    route: small\n"),
        "rules[0].when.task_probs.coding",
        "unknown task 'coding' in 'task_probs.coding'",
    ),
    "bad-operator": (
        doc("rules:\n  - name: a\n    when:\n      prompt_tokens:\n        gtt: 5  # <-\n    route: small\n"),
        "rules[0].when.prompt_tokens.gtt",
        "unknown operator 'gtt'; did you mean 'gt'?",
    ),
    "number-feature-given-text": (
        doc(
            "rules:\n  - name: a\n    when:\n      prompt_tokens:\n        gt: many  # <-\n    route: small\n"
        ),
        "rules[0].when.prompt_tokens.gt",
        "'prompt_tokens' is a number; got 'many'",
    ),
    "unknown-task-value": (
        doc("rules:\n  - name: a\n    when:\n      task: coding  # <-\n    route: small\n"),
        "rules[0].when.task",
        "'task' is one of chat, recall, state_tracking, long_document, sequential_data, code; got 'coding'",
    ),
    "ordering-on-task": (
        doc("rules:\n  - name: a\n    when:\n      task:\n        gt: code  # <-\n    route: small\n"),
        "rules[0].when.task.gt",
        "'gt' does not apply to 'task'",
    ),
    "in-needs-a-list": (
        doc("rules:\n  - name: a\n    when:\n      task:\n        in: code  # <-\n    route: small\n"),
        "rules[0].when.task.in",
        "'in' takes a non-empty list",
    ),
    "bad-item-in-list": (
        doc(
            "rules:\n  - name: a\n    when:\n      task:\n        in:\n"
            "          - code\n          - poetry  # <-\n"
            "    route: small\n"
        ),
        "rules[0].when.task.in[1]",
        "got 'poetry'",
    ),
    "bare-list": (
        doc("rules:\n  - name: a\n    when:\n      turns: [1, 2]  # <-\n    route: small\n"),
        "rules[0].when.turns",
        "write {in: [1, 2]}",
    ),
    "probability-out-of-range": (
        doc("rules:\n  - name: a\n    when:\n      state_tracking: {gte: 60}  # <-\n    route: small\n"),
        "rules[0].when.state_tracking.gte",
        "probability in [0, 1]",
    ),
    "deep-nesting": (
        doc(
            "rules:\n  - name: a\n    when:\n      any:\n        - {turns: {gt: 2}}\n        - not:\n"
            "            task: {eq: 7}  # <-\n    route: small\n"
        ),
        "rules[0].when.any[1].not.task.eq",
        "got 7",
    ),
    "empty-all": (
        doc("rules:\n  - name: a\n    when:\n      all: []  # <-\n    route: small\n"),
        "rules[0].when.all",
        "non-empty list of conditions",
    ),
    "condition-not-a-mapping": (
        doc("rules:\n  - name: a\n    when: prompt_tokens > 5  # <-\n    route: small\n"),
        "rules[0].when",
        "a condition is a mapping",
    ),
    "duplicate-rule-name": (
        doc(
            "rules:\n  - name: a\n    when: {task: code}\n    route: small\n"
            "  - name: a  # <-\n    when: {task: chat}\n    route: rwkv\n"
        ),
        "rules[1].name",
        "duplicate rule name 'a'",
    ),
    "reserved-rule-name": (
        doc("rules:\n  - name: default  # <-\n    when: {task: code}\n    route: small\n"),
        "rules[0].name",
        "reserved",
    ),
    "duplicate-backend-name": (
        doc("", catalogue=CATALOGUE.replace("name: rwkv", "name: small  # <-")),
        "backends[1].name",
        "duplicate backend name 'small'",
    ),
    "duplicate-yaml-key": (
        doc("rules:\n  - name: a\n    when: {task: code}\n    route: small\n    route: rwkv  # <-\n"),
        "rules[0].route",
        "duplicate key 'route'",
    ),
    "empty-catalogue": (
        doc("", catalogue="backends: []  # <-\n"),
        "backends",
        "the backend catalogue is empty",
    ),
    "empty-version": (
        doc("", head='name: test\nversion: ""  # <-\nclassifier: clf.json\n'),
        "version",
        "at least 1 character",
    ),
    "missing-classifier-file": (
        doc("", head="name: test\nclassifier: models/nope.json  # <-\n"),
        "classifier",
        "classifier file 'models/nope.json' not found",
    ),
}


def _marked_line(text: str) -> int:
    lines = [i + 1 for i, line in enumerate(text.splitlines()) if line.rstrip().endswith("# <-")]
    assert len(lines) == 1, "a case marks exactly one line"
    return lines[0]


@pytest.mark.parametrize("case", list(CASES))
def test_mistake_is_reported_with_file_line_and_field(case: str, policy_dir: Path) -> None:
    text, field, message = CASES[case]
    path = policy_dir / "policy.yaml"
    path.write_text(text)
    with pytest.raises(PolicyError) as info:
        load_policy(path, root=policy_dir, load_classifier=KeywordClassifier.load)
    line = _marked_line(text)
    matching = [i for i in info.value.issues if i.field == field and message in i.message]
    assert matching, f"no issue at {field!r} containing {message!r}; got:\n{info.value}"
    issue = matching[0]
    assert (issue.file, issue.line) == (str(path), line), str(info.value)
    assert f"{path}:{line}: {field or '<file>'}: " in str(info.value)


def test_every_mistake_is_reported_at_once_in_line_order(policy_dir: Path) -> None:
    text = doc(
        "rules:\n"
        "  - name: a\n"
        "    when: {promt_tokens: {gt: 5}}\n"  # line 14: unknown feature
        "    route: smal\n"  # line 15: unknown backend
        "    fallbacks: [rwkv, xlstm]\n"  # line 16: unknown fallback
        "  - name: b\n"
        "    when: {task: {lt: chat}}\n"  # line 18: ordering on a label
        "    route: {fastest: [small]}\n"
        "    descripton: typo\n"  # line 20: unknown key
    )
    with pytest.raises(PolicyError) as info:
        parse_policy(text, file="p.yaml", root=policy_dir, load_classifier=KeywordClassifier.load)
    got = [(i.line, i.field) for i in info.value.issues]
    assert got == [
        (14, "rules[0].when.promt_tokens"),
        (15, "rules[0].route"),
        (16, "rules[0].fallbacks[1]"),
        (18, "rules[1].when.task.lt"),
        (20, "rules[1].descripton"),
    ]
    lines = str(info.value).splitlines()
    assert len(lines) == 5 and all(line.startswith("p.yaml:") for line in lines)


def test_unreadable_file_is_a_policy_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as info:
        load_policy(tmp_path / "missing.yaml")
    assert info.value.issues[0].file == str(tmp_path / "missing.yaml")
    assert "cannot read the policy file" in str(info.value)


def test_not_a_mapping(policy_dir: Path) -> None:
    with pytest.raises(PolicyError, match=r"^p.yaml:1: <file>: a policy is a mapping"):
        parse_policy("- just\n- a list\n", file="p.yaml", root=policy_dir)


def test_classifier_that_fails_to_load_is_reported(policy_dir: Path) -> None:
    (policy_dir / "bad.json").write_text("{not json")
    text = doc("", head="name: test\nclassifier: bad.json\n")
    with pytest.raises(PolicyError) as info:
        parse_policy(text, file="p.yaml", root=policy_dir, load_classifier=KeywordClassifier.load)
    (issue,) = info.value.issues
    assert (issue.line, issue.field) == (2, "classifier")
    assert "cannot load classifier" in issue.message and "JSONDecodeError" in issue.message
