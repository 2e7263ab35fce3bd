"""Shared inputs for the policy tests.

KeywordClassifier is a real, deterministic object with the TaskClassifier interface (load a JSON
file, predict task probabilities and a state-tracking score). It is a test input that makes the
classifier's output easy to steer; the product's classifier is policies.classifier.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from archrouter.policies.types import TASKS

KEYWORDS = {
    "keywords": {
        "chat": ["hello", "thanks", "hi"],
        "recall": ["copy", "repeat", "lookup"],
        "state_tracking": ["swap", "move", "parity"],
        "long_document": ["summarise", "chapter"],
        "sequential_data": ["series", "log", "sensor"],
        "code": ["def", "function", "python"],
    },
    "state_words": ["swap", "move", "parity", "track"],
}


class KeywordClassifier:
    def __init__(self, keywords: dict[str, list[str]], state_words: list[str]):
        self.keywords = keywords
        self.state_words = set(state_words)
        self.seen: list[str] = []  # texts predicted on, so tests can check what the classifier read

    @classmethod
    def load(cls, path: str | Path) -> KeywordClassifier:
        data = json.loads(Path(path).read_text())
        return cls(data["keywords"], data["state_words"])

    def predict(self, text: str) -> tuple[dict[str, float], float]:
        self.seen.append(text)
        words = re.findall(r"[a-z_]+", text.lower())
        scores = {t: 1.0 + sum(w in self.keywords[t] for w in words) for t in TASKS}
        total = sum(scores.values())
        hits = sum(w in self.state_words for w in words)
        return {t: s / total for t, s in scores.items()}, min(1.0, hits / 3)


@pytest.fixture
def classifier() -> KeywordClassifier:
    return KeywordClassifier(KEYWORDS["keywords"], KEYWORDS["state_words"])


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    """A folder holding the classifier file that test policies name as `clf.json`."""
    (tmp_path / "clf.json").write_text(json.dumps(KEYWORDS))
    return tmp_path
