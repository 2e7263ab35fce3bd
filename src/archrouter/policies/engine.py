"""The rule engine: a loaded policy that turns `Features` into a `Decision`.

Build one with `policies.loader.load_policy`; conditions arrive compiled to closures, so a decision
is a few function calls per rule.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import yaml

from archrouter.policies.conditions import Check
from archrouter.policies.cost import estimate_all
from archrouter.policies.features import Classifier, extract
from archrouter.policies.schema import BackendSpec, DefaultRoute, PolicySpec, Route, RouteChoice, Rule
from archrouter.policies.types import Decision, Estimate, Features, RuleTrace

PINNED = "pinned"
TIE_BAND = 0.02  # capability accuracies this close rank as tied (as policy fit's smallest margin)
DEFAULT = "default"


@dataclass(frozen=True)
class CompiledRule:
    spec: Rule
    check: Check

    @property
    def name(self) -> str:
        return self.spec.name


class UnknownBackendError(KeyError):
    """A request pinned a backend the catalogue does not have (the router answers 404)."""


class Policy:
    def __init__(
        self,
        spec: PolicySpec,
        *,
        version: str,
        rules: Sequence[CompiledRule],
        classifier: Classifier,
        file: str | None = None,
    ):
        self.spec = spec
        self.name = spec.name
        self.version = version
        self.id = f"{spec.name}@{version}"
        self.catalogue: tuple[BackendSpec, ...] = tuple(spec.backends)
        self.backends: dict[str, BackendSpec] = {b.name: b for b in spec.backends}
        self.rules: tuple[CompiledRule, ...] = tuple(rules)
        self.default: DefaultRoute = spec.default
        self.classifier = classifier
        self.file = file

    def __repr__(self) -> str:
        return f"Policy({self.id!r}, backends={list(self.backends)}, rules={[r.name for r in self.rules]})"

    def backend(self, name: str) -> BackendSpec:
        try:
            return self.backends[name]
        except KeyError:
            raise UnknownBackendError(name) from None

    def estimates(self, prompt_tokens: int, max_tokens: int) -> dict[str, Estimate]:
        return estimate_all(self.catalogue, prompt_tokens, max_tokens)

    def features(
        self,
        *,
        messages: Sequence[Any] | None = None,
        prompt: str | None = None,
        max_tokens: int | None = None,
        metadata: Mapping[str, Any] | None = None,
        session_id: str | None = None,
        queue_depth: Mapping[str, int] | None = None,
        prompt_tokens: int | None = None,
    ) -> Features:
        """Features of one request under this policy's classifier and catalogue."""
        return extract(
            messages=messages,
            prompt=prompt,
            max_tokens=max_tokens,
            metadata=metadata,
            session_id=session_id,
            classifier=self.classifier,
            catalogue=self.catalogue,
            queue_depth=queue_depth,
            prompt_tokens=prompt_tokens,
        )

    def decide(self, features: Features, *, pinned: str | None = None) -> Decision:
        """The backend for these features: the first rule that holds, else the default.

        `pinned` (a request for a backend by name) bypasses the rules; an unknown name raises
        UnknownBackendError.
        """
        if any(b not in features.estimates for b in self.backends):
            features = replace(
                features, estimates=self.estimates(features.prompt_tokens, features.max_tokens)
            )
        if pinned is not None:
            self.backend(pinned)
            return Decision(
                backend=pinned,
                rule=PINNED,
                reason=f"the request named backend '{pinned}', so no rule was evaluated",
                fallbacks=[],
                policy=self.id,
                estimates=features.estimates,
            )
        trace: list[RuleTrace] = []
        for rule in self.rules:
            held, why = rule.check(features)
            trace.append(RuleTrace(rule=rule.name, fired=held, why=why))
            if held:
                backend, fallbacks, how = self._resolve(rule.spec.route, rule.spec.fallbacks, features)
                fallbacks, expected = self._by_capability(backend, fallbacks, rule.spec.fallbacks, features)
                return Decision(
                    backend=backend,
                    rule=rule.name,
                    reason=f"rule '{rule.name}' matched because {why}; {how}.",
                    fallbacks=fallbacks,
                    policy=self.id,
                    estimates=features.estimates,
                    trace=trace,
                    expected_accuracy=expected,
                )
        backend, fallbacks, how = self._resolve(self.default.route, self.default.fallbacks, features)
        fallbacks, expected = self._by_capability(backend, fallbacks, self.default.fallbacks, features)
        why = "no rule matched" if self.rules else "the policy has no rules"
        trace.append(RuleTrace(rule=DEFAULT, fired=True, why=why))
        return Decision(
            backend=backend,
            rule=DEFAULT,
            reason=f"{why}, so the default applies; {how}.",
            fallbacks=fallbacks,
            policy=self.id,
            estimates=features.estimates,
            trace=trace,
            expected_accuracy=expected,
        )

    def to_yaml(self) -> str:
        """The policy as YAML (comments and key order of the original file are not kept)."""
        data = self.spec.model_dump(mode="json", exclude_none=True)
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)

    def _by_capability(
        self, chosen: str, fallbacks: list[str], static: list[str] | None, features: Features
    ) -> tuple[list[str], dict[str, float]]:
        """(fallbacks, backend -> expected accuracy) under the policy's capability matrix.

        A static `fallbacks:` list is kept as written. Without one, every other backend of the catalogue
        is a fallback, best measured accuracy for this task and length bucket first (accuracies in the same
        TIE_BAND-wide band count as tied, the cheaper first: a cell of a few hundred items cannot tell
        finer differences apart); backends the request does not fit come last.
        """
        cap = self.spec.capability
        expected = cap.expected(features.task, features.prompt_tokens) if cap is not None else {}
        if not expected or static is not None:
            return fallbacks, expected
        needed = features.prompt_tokens + features.max_tokens

        def key(name: str) -> tuple[bool, int, float]:
            est = features.estimates.get(name)
            return (
                needed > self.backends[name].context_length,
                -math.floor((expected.get(name, -TIE_BAND) + 1e-9) / TIE_BAND),
                est.cost if est is not None else float("inf"),
            )

        return sorted((b for b in self.backends if b != chosen), key=key), expected

    # --- route targets ---------------------------------------------------------------------------

    def _resolve(
        self, route: Route, fallbacks: list[str] | None, features: Features
    ) -> tuple[str, list[str], str]:
        """(backend, fallbacks, a clause saying how the backend was chosen)."""
        if isinstance(route, str):
            return route, _without(fallbacks or [], route), f"routed to {route}"
        return self._choose(route, fallbacks, features)

    def _choose(
        self, route: RouteChoice, fallbacks: list[str] | None, features: Features
    ) -> tuple[str, list[str], str]:
        metric = "cost" if route.by == "cheapest" else "latency_ms"
        candidates = route.candidates
        needed = features.prompt_tokens + features.max_tokens
        fits = [c for c in candidates if needed <= self.backends[c].context_length]
        # A backend whose context the request overflows is chosen only when none fits.
        pool = fits or candidates
        order = {c: i for i, c in enumerate(candidates)}

        def key(c: str) -> tuple[float, int]:
            return getattr(features.estimates[c], metric), order[c]

        ranked = sorted(pool, key=key) + sorted((c for c in candidates if c not in pool), key=key)
        chosen = ranked[0]
        shown = ", ".join(f"{c} {_fmt(getattr(features.estimates[c], metric))}" for c in candidates)
        unit = "est. cost" if metric == "cost" else "est. latency ms"
        how = f"{chosen} is the {route.by} of {', '.join(candidates)} ({unit}: {shown})"
        skipped = [c for c in candidates if c not in fits]
        if fits and skipped:
            how += f"; {', '.join(skipped)} skipped: {needed} tokens exceed the context length"
        elif not fits:
            how += f"; none fits {needed} tokens, so all were considered"
        chosen_fallbacks = ranked[1:] if fallbacks is None else _without(fallbacks, chosen)
        return chosen, chosen_fallbacks, how


def _without(names: Sequence[str], chosen: str) -> list[str]:
    out: list[str] = []
    for n in names:
        if n != chosen and n not in out:
            out.append(n)
    return out


def _fmt(x: float) -> str:
    return f"{x:.4g}"
