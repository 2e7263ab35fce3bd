"""The rule engine, the cost model and feature extraction on a valid policy."""

from __future__ import annotations

import hashlib
import random
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from archrouter.policies.cost import estimate
from archrouter.policies.engine import UnknownBackendError
from archrouter.policies.errors import PolicyError
from archrouter.policies.features import estimate_prompt_tokens, render_text
from archrouter.policies.loader import load_policy, parse_policy
from archrouter.policies.schema import CostModel
from archrouter.policies.types import TASKS, Features
from tests.policies.conftest import KEYWORDS, KeywordClassifier

POLICY = """\
name: test
version: "7"
classifier: clf.json
backends:
  - name: small                     # attention: quadratic prefill, decode grows with context
    family: transformer
    checkpoint: models/small
    context_length: 2048
    cost:
      prefill_ms: {base: 2.0, per_token: 0.01, per_token_sq: 0.000002}
      decode_ms: {base: 5.0, per_context: 0.0005}
      price_per_1m_input: 0.02
      price_per_1m_output: 0.20
  - name: mamba                     # recurrent: linear prefill, constant decode
    family: mamba
    checkpoint: models/mamba
    context_length: 8192
    cost:
      prefill_ms: {base: 3.0, per_token: 0.02}
      decode_ms: {base: 8.0}
      price_per_1m_input: 0.04
      price_per_1m_output: 0.10
  - name: rwkv
    family: rwkv
    checkpoint: models/rwkv
    context_length: 8192
    cost:
      prefill_ms: {base: 3.0, per_token: 0.015}
      decode_ms: {base: 4.0}
      price_per_1m_input: 0.03
      price_per_1m_output: 0.30
      price_per_gpu_hour: 2.0
rules:
  - name: pinned-tier
    when: {metadata.tier: gold}
    route: small
  - name: state-tracking
    description: "sLSTM/RWKV-7 track state"
    when: {all: [{state_tracking: {gte: 0.6}}, {prompt_tokens: {lt: 8000}}]}
    route: rwkv
    fallbacks: [mamba, rwkv, small]
  - name: long-prompts
    when: {prompt_tokens: {gt: 1500}}
    route: {cheapest: [small, mamba, rwkv]}
  - name: fast-code
    when: {task: code}
    route: {fastest: [small, mamba, rwkv]}
    fallbacks: [rwkv]
default: {route: small, fallbacks: [mamba]}
"""


@pytest.fixture
def policy(policy_dir: Path):
    path = policy_dir / "policy.yaml"
    path.write_text(POLICY)
    return load_policy(path, root=policy_dir, load_classifier=KeywordClassifier.load)


def test_loads_with_its_classifier_and_id(policy) -> None:
    assert policy.id == "test@7"
    assert [b.name for b in policy.catalogue] == ["small", "mamba", "rwkv"]
    assert [r.name for r in policy.rules] == ["pinned-tier", "state-tracking", "long-prompts", "fast-code"]
    assert isinstance(policy.classifier, KeywordClassifier)
    assert policy.backend("rwkv").family == "rwkv"


def test_round_trip_through_yaml(policy, classifier) -> None:
    again = parse_policy(policy.to_yaml(), file="again.yaml", classifier=classifier)
    assert again.spec == policy.spec
    assert again.id == policy.id  # the version is explicit, so the text change does not alter it


def test_version_defaults_to_the_file_hash(classifier) -> None:
    text = POLICY.replace('version: "7"\n', "")
    policy = parse_policy(text, classifier=classifier)
    assert policy.version == hashlib.sha256(text.encode()).hexdigest()[:12]
    assert policy.id == f"test@{policy.version}"
    # Any edit, even a comment, is a new version: the decision log names exactly what ran.
    edited = parse_policy(text + "# tweak\n", classifier=classifier)
    assert edited.version != policy.version and len(edited.version) == 12
    # A number in YAML is taken as text.
    assert parse_policy(POLICY.replace('"7"', "2"), classifier=classifier).id == "test@2"


def test_first_matching_rule_decides_and_trace_lists_evaluated_rules(policy) -> None:
    f = policy.features(prompt="please swap the cups, then move left and track parity", max_tokens=32)
    assert f.state_tracking == 1.0 and f.task == "state_tracking"
    d = policy.decide(f)
    assert (d.backend, d.rule, d.policy) == ("rwkv", "state-tracking", "test@7")
    # Fallbacks keep their order, drop the chosen backend and duplicates.
    assert d.fallbacks == ["mamba", "small"]
    assert [(t.rule, t.fired) for t in d.trace] == [("pinned-tier", False), ("state-tracking", True)]
    assert d.trace[0].why == "metadata.tier is absent"
    n = f.prompt_tokens
    assert d.trace[1].why == f"state_tracking=1 is >= 0.6 and prompt_tokens={n} is < 8000"
    assert d.reason == f"rule 'state-tracking' matched because {d.trace[1].why}; routed to rwkv."
    assert set(d.estimates) == {"small", "mamba", "rwkv"}


def test_default_when_no_rule_matches(policy) -> None:
    f = policy.features(messages=[{"role": "user", "content": "hello, thanks!"}], max_tokens=16)
    d = policy.decide(f)
    assert (d.backend, d.rule, d.fallbacks) == ("small", "default", ["mamba"])
    assert [t.rule for t in d.trace] == [
        "pinned-tier",
        "state-tracking",
        "long-prompts",
        "fast-code",
        "default",
    ]
    assert all(not t.fired for t in d.trace[:-1]) and d.trace[-1].fired
    assert d.trace[2].why == f"prompt_tokens={f.prompt_tokens} is not > 1500"
    assert d.reason.startswith("no rule matched, so the default applies; routed to small")


def test_pinned_backend_skips_the_rules(policy) -> None:
    f = policy.features(prompt="swap swap swap", max_tokens=8)
    d = policy.decide(f, pinned="mamba")
    assert (d.backend, d.rule, d.fallbacks, d.trace) == ("mamba", "pinned", [], [])
    assert "named backend 'mamba'" in d.reason
    with pytest.raises(UnknownBackendError):
        policy.decide(f, pinned="gpt-4")


def _features(policy, prompt_tokens: int, max_tokens: int, task: str = "chat") -> Features:
    probs = {t: float(t == task) for t in TASKS}
    return Features(
        prompt_tokens=prompt_tokens, max_tokens=max_tokens, task=task, task_probs=probs, state_tracking=0.0
    )


def test_cheapest_picks_the_lowest_estimated_cost(policy) -> None:
    f = _features(policy, prompt_tokens=1600, max_tokens=64)
    d = policy.decide(f)
    assert d.rule == "long-prompts"
    costs = {b.name: estimate(b, 1600, 64).cost for b in policy.catalogue}
    ranked = sorted(costs, key=costs.get)
    assert d.backend == ranked[0]
    assert d.fallbacks == ranked[1:]  # no fallbacks given: the other candidates, cheapest first
    assert d.estimates[d.backend].cost == pytest.approx(costs[d.backend], rel=1e-12)
    assert f"{d.backend} is the cheapest of small, mamba, rwkv" in d.reason


def test_cheapest_skips_backends_whose_context_is_too_short(policy) -> None:
    # 2000 + 100 tokens overflow small's 2048-token context even if small were the cheapest.
    f = _features(policy, prompt_tokens=2000, max_tokens=100)
    costs = {b.name: estimate(b, 2000, 100).cost for b in policy.catalogue}
    assert min(costs, key=costs.get) == "small"
    d = policy.decide(f)
    assert (d.backend, d.fallbacks) == ("mamba", ["rwkv", "small"])  # small comes last: it does not fit
    assert "small skipped: 2100 tokens exceed the context length" in d.reason


def test_fastest_picks_the_lowest_estimated_latency(policy) -> None:
    # Few tokens: prefill dominates and small wins; many: rwkv's cheaper decode step wins.
    for max_tokens, fastest in ((1, "small"), (400, "rwkv")):
        f = _features(policy, prompt_tokens=300, max_tokens=max_tokens, task="code")
        d = policy.decide(f)
        latency = {b.name: estimate(b, 300, max_tokens).latency_ms for b in policy.catalogue}
        assert d.rule == "fast-code"
        assert d.backend == min(latency, key=latency.get) == fastest
        assert d.fallbacks == ([] if d.backend == "rwkv" else ["rwkv"])  # explicit fallbacks minus the chosen
    assert "is the fastest of small, mamba, rwkv (est. latency ms:" in d.reason


def test_metadata_hint_routes(policy) -> None:
    f = policy.features(prompt="hello", metadata={"tier": "gold"})
    assert policy.decide(f).rule == "pinned-tier"


def test_decide_fills_missing_estimates(policy) -> None:
    d = policy.decide(_features(policy, 100, 10))
    assert set(d.estimates) == {"small", "mamba", "rwkv"}


# --- cost model ------------------------------------------------------------------------------------


def test_estimate_equals_the_sum_over_decode_steps() -> None:
    rng = random.Random()
    for _ in range(20):
        cost = CostModel(
            prefill_ms={
                "base": rng.uniform(0, 5),
                "per_token": rng.uniform(0, 0.1),
                "per_token_sq": rng.uniform(0, 1e-5),
            },
            decode_ms={"base": rng.uniform(0, 10), "per_context": rng.uniform(0, 1e-3)},
            price_per_1m_input=rng.uniform(0, 1),
            price_per_1m_output=rng.uniform(0, 2),
            price_per_gpu_hour=rng.uniform(0, 4),
        )
        n, m = rng.randint(0, 5000), rng.randint(0, 500)
        p, dc = cost.prefill_ms, cost.decode_ms
        latency = p.base + p.per_token * n + p.per_token_sq * n * n
        latency += sum(dc.base + dc.per_context * c for c in range(n, n + m))  # one step per decoded token
        price = n * cost.price_per_1m_input / 1e6 + m * cost.price_per_1m_output / 1e6
        price += latency / 3.6e6 * cost.price_per_gpu_hour
        est = estimate(cost, n, m)
        # Closed form vs. a loop over steps: equal up to float rounding.
        assert est.latency_ms == pytest.approx(latency, rel=1e-9, abs=1e-9)
        assert est.cost == pytest.approx(price, rel=1e-9, abs=1e-15)


def test_attention_prefill_grows_quadratically_recurrent_linearly(policy) -> None:
    small, mamba = policy.backend("small"), policy.backend("mamba")
    s1, s2 = (estimate(small, n, 0).latency_ms - 2.0 for n in (1000, 2000))
    m1, m2 = (estimate(mamba, n, 0).latency_ms - 3.0 for n in (1000, 2000))
    assert s2 / s1 > 2.0 and m2 / m1 == pytest.approx(2.0)


# --- features --------------------------------------------------------------------------------------


def test_features_from_chat_messages(policy) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Write a python function"},
        {"role": "assistant", "content": "def f(): pass"},
        {"role": "user", "content": [{"type": "text", "text": "now héllo"}]},  # content parts, non-ASCII
    ]
    f = policy.features(messages=messages, max_tokens=50, session_id="s1", metadata={"n": 3, "ok": True})
    assert f.turns == 2
    assert f.task == "code"
    assert abs(sum(f.task_probs.values()) - 1.0) < 1e-9 and set(f.task_probs) == set(TASKS)
    # rendered as the classifier's training data is (role: content blocks)
    text = "system: Be brief.\n\nuser: Write a python function\n\nassistant: def f(): pass\n\nuser: now héllo"
    assert policy.classifier.seen[-1] == text == render_text(messages)
    body = sum(
        len(s.encode()) for s in ("Be brief.", "Write a python function", "def f(): pass", "now héllo")
    )
    assert f.prompt_tokens == 1 + body + 2 * 4 == estimate_prompt_tokens(messages)
    assert (f.session_id, f.metadata, f.max_tokens) == ("s1", {"n": "3", "ok": "true"}, 50)
    assert f.estimates["mamba"] == estimate(policy.backend("mamba"), f.prompt_tokens, 50)


def test_features_from_a_completion_prompt(policy) -> None:
    f = policy.features(prompt="ünïcode", queue_depth={"small": 4})
    assert f.prompt_tokens == 1 + len("ünïcode".encode())  # BOS + one token per UTF-8 byte
    assert (f.turns, f.max_tokens, f.queue_depth) == (1, 256, {"small": 4})
    assert policy.features(prompt="x", prompt_tokens=99).prompt_tokens == 99  # the router's exact count wins


def test_repository_policy_is_valid(classifier) -> None:
    """The shipped policy (fitted from the capability matrix) serves the four trained checkpoints."""
    root = Path(__file__).resolve().parents[2]
    policy = load_policy(root / "config" / "policy.yaml", classifier=classifier)
    assert {b.family for b in policy.catalogue} == {"transformer", "mamba", "rwkv", "xlstm"}
    assert all((root / b.checkpoint / "training.json").is_file() for b in policy.catalogue)
    long = policy.decide(policy.features(prompt="a" * 5000))
    cheapest = min(["rwkv", "xlstm", "mamba"], key=lambda b: long.estimates[b].cost)
    assert (long.backend, long.rule) == (cheapest, "beyond-context")
    chat = policy.decide(policy.features(messages=[{"role": "user", "content": "hi, what is the capital of peru?"}]))
    assert chat.rule.startswith("chat-")


# --- robustness ------------------------------------------------------------------------------------


def _paths(node, here=()):
    yield here
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*here, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*here, i))


def _replaced(data, path, value):
    if not path:
        return value
    copy = dict(data) if isinstance(data, dict) else list(data)
    copy[path[0]] = _replaced(data[path[0]], path[1:], value)
    return copy


VALID = yaml.safe_load(POLICY)
YAML_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 10**6)
    | st.floats()
    | st.text(max_size=8)
    | st.sampled_from(["small", "rwkv", "transformer", "cheapest", "code"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=st.sampled_from(list(_paths(VALID))), value=YAML_VALUES)
def test_any_corrupted_policy_raises_only_policy_error(path, value) -> None:
    classifier = KeywordClassifier(KEYWORDS["keywords"], KEYWORDS["state_words"])
    text = yaml.safe_dump(_replaced(VALID, path, value), sort_keys=False)
    try:
        policy = parse_policy(text, file="p.yaml", classifier=classifier)
    except PolicyError as e:
        assert e.issues and all(i.file == "p.yaml" and i.line >= 1 and i.message for i in e.issues)
    else:
        assert policy.decide(policy.features(prompt="swap the cups")).backend in policy.backends


def test_policies_import_no_torch() -> None:
    code = ("import sys, archrouter.policies.loader, archrouter.policies.engine, archrouter.policies.features; "
            "print('torch' in sys.modules)")
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
