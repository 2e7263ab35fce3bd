"""Re-decide recorded traffic (the router's decision log) with another policy.

Records come from a JSONL file (the structlog lines or `decisions.jsonl`) or the Redis stream.
The log keeps features, not prompt text: replay re-uses the recorded task probabilities and
state-tracking score and recomputes cost estimates under the new policy's catalogue; rules
over `latency_ms.*`/`cost.*` therefore see the new catalogue's numbers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import redis

from archrouter.policies.engine import Policy
from archrouter.policies.types import Features


def read_log(source: str, *, stream: str = "archrouter:decisions", limit: int | None = None) -> list[dict[str, Any]]:
    if source.startswith(("redis://", "rediss://")):
        url = urlparse(source)
        if url.fragment:
            stream = url.fragment
        client = redis.Redis.from_url(source.split("#")[0])
        entries = client.xrange(stream, count=limit)
        return [json.loads(fields[b"record"]) for _, fields in entries]
    out = []
    with Path(source).open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{source}:{lineno}: not JSON: {exc.msg}") from None
            if rec.get("event", "decision") != "decision" or "features" not in rec:
                continue  # other log lines share the file
            out.append(rec)
            if limit and len(out) >= limit:
                break
    return out


def replay(policy: Policy, records: list[dict[str, Any]]) -> dict[str, Any]:
    changes, counts = [], {"same": 0, "changed": 0}
    moved: dict[str, int] = {}
    for rec in records:
        f = rec["features"]
        feats = Features(
            prompt_tokens=f["prompt_tokens"], max_tokens=f["max_tokens"], task=f["task"], task_probs=f["task_probs"],
            state_tracking=f["state_tracking"], turns=f.get("turns", 1), session_id=f.get("session_id"),
            metadata=f.get("metadata") or {}, estimates=policy.estimates(f["prompt_tokens"], f["max_tokens"]),
        )
        new = policy.decide(feats)
        old_backend = rec.get("decision", {}).get("backend") or rec.get("backend")
        old_rule = rec.get("decision", {}).get("rule") or rec.get("rule")
        if (new.backend, new.rule) == (old_backend, old_rule):
            counts["same"] += 1
            continue
        counts["changed"] += 1
        key = f"{old_backend} -> {new.backend}"
        moved[key] = moved.get(key, 0) + 1
        changes.append({"request_id": rec.get("request_id"), "old": {"backend": old_backend, "rule": old_rule},
                        "new": {"backend": new.backend, "rule": new.rule, "reason": new.reason},
                        "task": f["task"], "prompt_tokens": f["prompt_tokens"]})
    return {"policy": policy.id, "records": len(records), **counts, "moves": moved, "changes": changes}
