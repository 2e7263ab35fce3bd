"""The playground's server side: labelled examples, policy validation, and a policy diff.

Examples and the diff's prompts come from whatever labelled JSONL files exist under archrouter/evals/data/.
Validation runs the same loader the server uses (`parse_policy`), so an error shows at the line
`archrouter policy check` would report. The diff decides a bounded, seeded sample of labelled
prompts with the live policy and with the candidate (policies.evaluation) and compares them
(policies.comparison).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from archrouter.policies.comparison import changed, deltas
from archrouter.policies.evaluation import decide_all, summarise
from archrouter.policies.labelled import LabelledDataError, LabelledPrompt, read_labelled
from archrouter.policies.loader import PolicyError, parse_policy

DATA_DIR = Path(__file__).resolve().parents[2] / "evals" / "data"  # the labelled sets, read as files (no import)
EXAMPLES_PER_TASK = 6  # per file, in the picker
DIFF_DEFAULT, DIFF_MAX = 300, 2000
CHANGED_SHOWN = 200
PREVIEW_CHARS = 90


@dataclass(frozen=True)
class LabelledFile:
    name: str
    records: list[LabelledPrompt]


class LabelledSets:
    """The labelled JSONL files under a folder, read once per modification time."""

    def __init__(self, folder: Path = DATA_DIR):
        self.folder = folder
        self._cache: dict[Path, tuple[float, LabelledFile | None]] = {}

    def files(self) -> list[LabelledFile]:
        out = []
        paths = [*self.folder.glob("*.jsonl"), *self.folder.glob("*.jsonl.gz")] if self.folder.is_dir() else []
        for path in sorted(paths):
            mtime = path.stat().st_mtime
            cached = self._cache.get(path)
            if cached is None or cached[0] != mtime:
                try:
                    cached = (mtime, LabelledFile(path.name, read_labelled(path)))
                except (LabelledDataError, OSError, UnicodeDecodeError):
                    cached = (mtime, None)  # not a labelled set (or broken): left out of the picker
                self._cache[path] = cached
            if cached[1] is not None:
                out.append(cached[1])
        return out

    def get(self, name: str, index: int) -> LabelledPrompt | None:
        for f in self.files():
            if f.name == name and 0 <= index < len(f.records):
                return f.records[index]
        return None

    def examples(self) -> list[dict[str, Any]]:
        """A few prompts per task from each file, for the picker (the whole record is fetched on choice)."""
        out = []
        for f in self.files():
            seen: dict[str, int] = {}
            for i, rec in enumerate(f.records):
                if seen.get(rec.task, 0) >= EXAMPLES_PER_TASK:
                    continue
                seen[rec.task] = seen.get(rec.task, 0) + 1
                text = " ".join(rec.text().split())
                out.append({"file": f.name, "index": i, "id": rec.id or f"{f.name}#{i + 1}", "task": rec.task,
                            "best_backend": rec.best_backend, "chars": len(rec.text()),
                            "preview": text[:PREVIEW_CHARS] + ("…" if len(text) > PREVIEW_CHARS else "")})
        return out

    def sample(self, limit: int, seed: int = 0) -> tuple[list[LabelledPrompt], list[str]]:
        """Up to `limit` prompts, seeded; held-out files (no 'train' in the name) when any exist."""
        files = self.files()
        held_out = [f for f in files if "train" not in f.name]
        chosen = held_out or files
        pool = [r for f in chosen for r in f.records]
        if len(pool) > limit:
            pool = random.Random(seed).sample(pool, limit)
        return pool, [f.name for f in chosen]


def example_body(rec: LabelledPrompt) -> dict[str, Any]:
    messages = [m.model_dump() for m in rec.messages] if rec.messages is not None else None
    return {"id": rec.id, "task": rec.task, "best_backend": rec.best_backend,
            "state_tracking": rec.tracks_state(), "messages": messages, "prompt": rec.prompt}


def check_policy(text: str, live, file: str):
    """Parse `text` as a policy; reuse the live classifier when the candidate names the same file."""
    classifier = None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        data = None  # parse_policy reports it with its line
    if live is not None and isinstance(data, dict) and data.get("classifier") == live.spec.classifier:
        classifier = live.classifier
    return parse_policy(text, file=file, classifier=classifier)


def validate(text: str, live, file: str) -> dict[str, Any]:
    try:
        policy = check_policy(text, live, file)
    except PolicyError as exc:
        return {"ok": False, "policy": None,
                "issues": [{"line": i.line, "field": i.field, "message": i.message} for i in exc.issues]}
    return {"ok": True, "policy": policy.id, "issues": [],
            "backends": list(policy.backends), "rules": [r.name for r in policy.rules]}


def diff(text: str, live, file: str, sets: LabelledSets, *, limit: int = DIFF_DEFAULT, seed: int = 0
         ) -> dict[str, Any]:
    """How the candidate's decisions differ from the live policy's on a labelled sample."""
    checked = validate(text, live, file)
    if not checked["ok"]:
        return checked
    candidate = check_policy(text, live, file)
    records, sources = sets.sample(max(1, min(limit, DIFF_MAX)), seed)
    if not records:
        return {"ok": False, "policy": candidate.id, "issues": [
            {"line": 0, "field": "", "message": f"no labelled prompts under {DATA_DIR}"}]}
    rows_a = decide_all(live, records, progress=False)
    rows_b = decide_all(candidate, records, progress=False)
    sa, sb = summarise(live, rows_a, seed=seed), summarise(candidate, rows_b, seed=seed)
    moved = changed(rows_a, rows_b)
    return {
        "ok": True,
        "live": live.id,
        "candidate": candidate.id,
        "prompts": len(records),
        "sources": sources,
        "seed": seed,
        "deltas": deltas(sa, sb),
        "changed_count": len(moved),
        "changed": moved[:CHANGED_SHOWN],
        "backend_counts": {"live": sa["backend_counts"], "candidate": sb["backend_counts"]},
        "rule_counts": {"live": sa["rule_counts"], "candidate": sb["rule_counts"]},
    }
