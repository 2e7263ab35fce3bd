"""Capability-aware fallbacks: the policy's `capability:` section ranks the fallbacks of rules that give
no static list (best measured accuracy for the task and length bucket first, ties by cost)."""

from __future__ import annotations

import pytest

from archrouter.policies.errors import PolicyError
from archrouter.policies.loader import parse_policy
from tests.policies.test_policy_engine import POLICY

CAPABILITY = """
capability:
  source: test
  tasks:
    code:
      bounds: [100]
      accuracy: {small: [0.9, 0.2], mamba: [0.5, 0.6], rwkv: [0.7, 0.6]}
    chat:
      accuracy: {small: [0.8], mamba: [0.8], rwkv: [0.3]}
"""

# rules with no static fallbacks so the matrix decides; one with a static list that must be kept
RULES = """\
rules:
  - name: code
    when: {task: code}
    route: small
  - name: state
    when: {task: state_tracking}
    route: rwkv
    fallbacks: [small]
default: {route: rwkv}
"""


@pytest.fixture
def cap_policy(classifier):
    head = POLICY.split("rules:")[0]
    return parse_policy(head + RULES + CAPABILITY, classifier=classifier)


def test_fallbacks_follow_the_matrix_for_the_task_and_length_bucket(cap_policy) -> None:
    short = cap_policy.decide(cap_policy.features(prompt="python function", max_tokens=8))
    assert (short.backend, short.rule) == ("small", "code")
    assert short.fallbacks == ["rwkv", "mamba"]  # 0.7 > 0.5 in the short bucket
    assert short.expected_accuracy == {"small": 0.9, "mamba": 0.5, "rwkv": 0.7}
    long = cap_policy.decide(cap_policy.features(prompt="python function " + "x " * 300, max_tokens=8))
    assert long.expected_accuracy["small"] == 0.2
    # mamba and rwkv tie at 0.6 past 100 tokens: the cheaper goes first
    costs = {b: long.estimates[b].cost for b in ("mamba", "rwkv")}
    assert long.fallbacks == sorted(costs, key=costs.get)


def test_static_fallbacks_override_the_matrix(cap_policy) -> None:
    d = cap_policy.decide(cap_policy.features(prompt="swap the cups, track parity", max_tokens=8))
    assert (d.backend, d.rule, d.fallbacks) == ("rwkv", "state", ["small"])


def test_unmeasured_task_keeps_the_plain_fallbacks(cap_policy) -> None:
    d = cap_policy.decide(cap_policy.features(prompt="summarise this chapter", max_tokens=8))
    assert d.rule == "default" and d.fallbacks == [] and d.expected_accuracy == {}


def test_requests_past_a_context_go_last(cap_policy) -> None:
    # chat: small and mamba tie at 0.8, rwkv 0.3; a request past small's 2048-token context puts it last
    d = cap_policy.decide(cap_policy.features(prompt="hello " * 400, max_tokens=8))
    assert d.backend == "rwkv" and d.fallbacks == ["mamba", "small"]


@pytest.mark.parametrize(
    ("section", "needle"),
    [
        (CAPABILITY.replace("mamba: [0.5, 0.6]", "nope: [0.5, 0.6]"), "unknown backend 'nope'"),
        (CAPABILITY.replace("[0.9, 0.2]", "[0.9]"), "1 accuracies for 2 length buckets"),
        (CAPABILITY.replace("bounds: [100]", "bounds: [100, 50]"), "strictly ascending"),
        (CAPABILITY.replace("[0.9, 0.2]", "[1.5, 0.2]"), "[0, 1]"),
        (CAPABILITY.replace("    chat:", "    gossip:"), "gossip"),
    ],
)
def test_bad_capability_sections_are_named(classifier, section: str, needle: str) -> None:
    head = POLICY.split("rules:")[0]
    with pytest.raises(PolicyError) as err:
        parse_policy(head + RULES + section, file="p.yaml", classifier=classifier)
    assert needle in str(err.value)
    assert "capability" in str(err.value)


def test_shipped_policy_carries_the_matrix_and_no_static_fallbacks() -> None:
    from pathlib import Path

    import yaml

    data = yaml.safe_load((Path(__file__).resolve().parents[2] / "config/policy.yaml").read_text())
    assert set(data["capability"]["tasks"]) == {
        "chat", "recall", "state_tracking", "long_document", "sequential_data", "code"
    }
    assert all("fallbacks" not in r for r in data["rules"]) and "fallbacks" not in data["default"]
