"""Conditions: every operator, the combinators, the `why` they give, and the parser under random input."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from archrouter.policies.conditions import OPS, CompileContext, compile_condition
from archrouter.policies.types import TASKS, Estimate, Features

BACKENDS = ["small", "rwkv"]


def features(**overrides) -> Features:
    base = dict(
        prompt_tokens=812,
        max_tokens=256,
        task="code",
        task_probs={t: (0.75 if t == "code" else 0.05) for t in TASKS},
        state_tracking=0.25,
        turns=2,
        metadata={"tier": "gold", "budget": "12.5", "batch": "true"},
        estimates={
            "small": Estimate(latency_ms=40.0, cost=0.002),
            "rwkv": Estimate(latency_ms=25.0, cost=0.001),
        },
        queue_depth={"small": 3},
    )
    base.update(overrides)
    return Features(**base)


def compile_ok(raw):
    ctx = CompileContext(backends=BACKENDS)
    check = compile_condition(raw, ("when",), ctx)
    assert ctx.issues == [] and check is not None, ctx.issues
    return check


# (feature, op, value, expected on features()) — two cases per operator, one holding and one not.
OPERATOR_CASES = [
    ("prompt_tokens", "eq", 812, True),
    ("prompt_tokens", "eq", 813, False),
    ("task", "ne", "chat", True),
    ("task", "ne", "code", False),
    ("prompt_tokens", "lt", 813, True),
    ("prompt_tokens", "lt", 812, False),
    ("prompt_tokens", "lte", 812, True),
    ("prompt_tokens", "lte", 811, False),
    ("state_tracking", "gt", 0.2, True),
    ("state_tracking", "gt", 0.25, False),
    ("turns", "gte", 2, True),
    ("turns", "gte", 3, False),
    ("task", "in", ["code", "recall"], True),
    ("task", "in", ["chat"], False),
    ("max_tokens", "not_in", [1, 2], True),
    ("max_tokens", "not_in", [256], False),
]


@pytest.mark.parametrize(("feature", "op", "value", "expected"), OPERATOR_CASES)
def test_operator(feature: str, op: str, value, expected: bool) -> None:
    held, why = compile_ok({feature: {op: value}})(features())
    assert held is expected
    assert why.startswith(f"{feature}=")


def test_every_operator_is_covered() -> None:
    assert {op for _, op, _, _ in OPERATOR_CASES} == set(OPS)


def test_bare_scalar_means_eq_and_several_ops_mean_all() -> None:
    assert compile_ok({"task": "code"})(features()) == (True, "task=code is code")
    check = compile_ok({"prompt_tokens": {"gt": 500, "lt": 1000}})
    assert check(features()) == (True, "prompt_tokens=812 is > 500 and prompt_tokens=812 is < 1000")
    assert check(features(prompt_tokens=1500)) == (False, "prompt_tokens=1500 is not < 1000")


def test_why_reads_as_a_sentence() -> None:
    check = compile_ok({"prompt_tokens": {"gt": 1500}})
    assert check(features()) == (False, "prompt_tokens=812 is not > 1500")


def test_several_features_in_one_mapping_must_all_hold() -> None:
    check = compile_ok({"task": "code", "turns": {"gte": 3}})
    assert check(features()) == (False, "turns=2 is not >= 3")
    assert check(features(turns=3)) == (True, "task=code is code and turns=3 is >= 3")


def test_per_task_and_per_backend_features() -> None:
    assert compile_ok({"task_probs.code": {"gte": 0.7}})(features())[0]
    assert not compile_ok({"task_probs.chat": {"gte": 0.7}})(features())[0]
    assert compile_ok({"latency_ms.rwkv": {"lt": 30}})(features()) == (True, "latency_ms.rwkv=25 is < 30")
    assert compile_ok({"cost.small": {"gt": 0.0015}})(features())[0]
    assert compile_ok({"queue_depth.small": {"gte": 3}})(features())[0]
    # No report from an engine means nothing queued.
    assert compile_ok({"queue_depth.rwkv": 0})(features()) == (True, "queue_depth.rwkv=0 is 0")


def test_missing_estimate_is_absent() -> None:
    check = compile_ok({"latency_ms.rwkv": {"lt": 30}})
    assert check(features(estimates={})) == (False, "latency_ms.rwkv is absent")


def test_metadata_hints() -> None:
    f = features()
    assert compile_ok({"metadata.tier": "gold"})(f) == (True, "metadata.tier=gold is gold")
    assert compile_ok({"metadata.tier": {"in": ["silver", "gold"]}})(f)[0]
    # Metadata values are strings; a YAML boolean or number is compared as JSON writes it.
    assert compile_ok({"metadata.batch": True})(f)[0]
    assert compile_ok({"metadata.budget": {"gt": 10}})(f) == (True, "metadata.budget=12.5 is > 10")
    assert compile_ok({"metadata.tier": {"gt": 10}})(f) == (False, "metadata.tier='gold' is not a number")
    # Absent: only negative comparisons hold.
    assert compile_ok({"metadata.region": "eu"})(f) == (False, "metadata.region is absent")
    assert compile_ok({"metadata.region": {"ne": "eu"}})(f) == (True, "metadata.region is absent")
    assert compile_ok({"metadata.region": {"not_in": ["eu"]}})(f)[0]


def test_all_any_not_nesting() -> None:
    check = compile_ok(
        {
            "any": [
                {"all": [{"task": "chat"}, {"prompt_tokens": {"lt": 100}}]},
                {"not": {"any": [{"turns": {"lt": 2}}, {"state_tracking": {"gte": 0.5}}]}},
            ]
        }
    )
    # any[0] fails on task; any[1]: neither inner condition holds, so `not` holds.
    assert check(features()) == (True, "turns=2 is not < 2 and state_tracking=0.25 is not >= 0.5")
    # Now the inner `any` holds (turns=1), so `not` fails; any[0] still fails.
    held, why = check(features(turns=1))
    assert not held
    assert why == "task=code is not chat and turns=1 is < 2"
    # any[0] holds.
    assert check(features(task="chat", prompt_tokens=50)) == (
        True,
        "task=chat is chat and prompt_tokens=50 is < 100",
    )


def test_not_keeps_the_inner_reason() -> None:
    check = compile_ok({"not": {"task": "code"}})
    assert check(features()) == (False, "task=code is code")
    assert check(features(task="chat")) == (True, "task=chat is not code")


# --- the parser under random input -------------------------------------------------------------------

FEATURE_NAMES = [
    "prompt_tokens",
    "max_tokens",
    "task",
    "state_tracking",
    "turns",
    "task_probs.code",
    "task_probs.nope",
    "latency_ms.small",
    "cost.rwkv",
    "queue_depth.small",
    "latency_ms.ghost",
    "metadata.tier",
    "bogus",
    "",
]
KEYS = st.sampled_from([*FEATURE_NAMES, "all", "any", "not"]) | st.text(max_size=8)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(10**30), 10**30)
    | st.floats(allow_nan=True)
    | st.sampled_from([*TASKS, "gold", "12"])
    | st.text(max_size=6)
)
COMPARISONS = (
    SCALARS
    | st.lists(SCALARS, max_size=3)
    | st.dictionaries(
        st.sampled_from([*OPS, "gtt", "", "nin"]), SCALARS | st.lists(SCALARS, max_size=3), max_size=3
    )
)
CONDITIONS = st.recursive(
    st.dictionaries(KEYS, COMPARISONS, max_size=3),
    lambda inner: (
        st.dictionaries(KEYS, inner | st.lists(inner, max_size=3) | COMPARISONS, max_size=3)
        | st.lists(inner, max_size=2)
    ),
    max_leaves=12,
)
FEATURES = st.builds(
    features,
    prompt_tokens=st.integers(0, 10**6),
    task=st.sampled_from(TASKS),
    state_tracking=st.floats(0, 1),
    turns=st.integers(0, 50),
    metadata=st.dictionaries(st.sampled_from(["tier", "budget"]), st.text(max_size=5), max_size=2),
    estimates=st.just({}) | st.just(features().estimates),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=CONDITIONS, f=FEATURES)
def test_random_conditions_compile_or_report_and_never_crash(raw, f: Features) -> None:
    ctx = CompileContext(backends=BACKENDS)
    check = compile_condition(raw, ("rules", 0, "when"), ctx)
    if check is None:
        assert ctx.issues, "a rejected condition says why"
        for loc, message in ctx.issues:
            assert loc[:3] == ("rules", 0, "when") and message
    else:
        assert ctx.issues == []
        held, why = check(f)
        assert isinstance(held, bool) and why


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=CONDITIONS)
def test_random_conditions_in_a_policy_file_raise_only_policy_error(raw) -> None:
    from archrouter.policies.errors import PolicyError
    from archrouter.policies.loader import parse_policy
    from tests.policies.conftest import KEYWORDS, KeywordClassifier

    text = yaml.safe_dump(
        {
            "name": "fuzz",
            "classifier": "unused.json",
            "backends": [
                {"name": b, "family": "rwkv", "checkpoint": "m", "context_length": 64} for b in BACKENDS
            ],
            "rules": [{"name": "r", "when": raw, "route": "small"}],
            "default": {"route": "rwkv"},
        }
    )
    classifier = KeywordClassifier(KEYWORDS["keywords"], KEYWORDS["state_words"])
    try:
        policy = parse_policy(text, file="fuzz.yaml", classifier=classifier)
    except PolicyError as e:
        assert e.issues and all(i.file == "fuzz.yaml" and i.line >= 1 for i in e.issues)
    else:
        assert policy.decide(features()).backend in BACKENDS
