"""What a fallback did, for the response headers, the decision record and /v1/route.

The expected accuracy change comes from the policy's `capability:` section (the matrix it was fitted
from): the served backend's measured accuracy for the request's task and length bucket, less that of
the backend the decision chose.
"""

from __future__ import annotations

from typing import Any

from archrouter.policies.types import Decision


def expected_delta(decision: Decision, backend: str) -> float | None:
    acc = decision.expected_accuracy
    if decision.backend not in acc or backend not in acc:
        return None
    return round(acc[backend] - acc[decision.backend], 3)


def plan(decision: Decision) -> list[dict[str, Any]]:
    """The fallbacks in the order they would be tried, each with its expected accuracy change."""
    return [{"backend": b, "expected_delta": expected_delta(decision, b)} for b in decision.fallbacks]


def summary(decision: Decision, served: str, failed: list[tuple[str, str]], reasons: dict[str, str]
            ) -> dict[str, Any] | None:
    """{"from", "to", "reason", "error", "expected_delta"} when `served` is not the decided backend."""
    errors = dict(failed)
    # a decided backend never tried (the key may not use it) is no fallback
    reason = reasons.get(decision.backend) or ("unhealthy" if decision.backend in errors else None)
    if served == decision.backend or reason is None:
        return None
    return {
        "from": decision.backend,
        "to": served,
        "reason": reason,
        "error": errors.get(decision.backend),
        "passed_over": [n for n, _ in failed],
        "expected_delta": expected_delta(decision, served),
    }


def headers(info: dict[str, Any] | None) -> dict[str, str]:
    if info is None:
        return {}
    out = {"x-archrouter-fallback-from": ",".join(info["passed_over"]) or info["from"],
           "x-archrouter-fallback-reason": info["reason"]}
    if info["expected_delta"] is not None:
        out["x-archrouter-expected-delta"] = f"{info['expected_delta']:+.3f}"
    return out
